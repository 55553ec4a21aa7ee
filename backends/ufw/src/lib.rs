//! The ufw backend: the allowlist as ordinary ufw rules, changed through ufw's own code (its
//! frontend driven from one Python process per apply, or the `ufw` CLI: see [`driver`]).
//!
//! Objects owned (a compatibility contract: renaming them orphans old rules): every ufw rule whose
//! comment is [`UfwOptions::comment`] (default [`cfa_core::RULE_COMMENT`], `cf-allowlist`), one per
//! range and protocol:
//!
//! ```text
//! ufw allow proto tcp from 173.245.48.0/20 to any port 80,443 comment cf-allowlist
//! ```
//!
//! and, with `restrict: true`, one deny rule per family and protocol, after all our allow rules
//! (ufw applies the first rule that matches: Cloudflare meets our allow first, everyone else our
//! deny):
//!
//! ```text
//! ufw deny proto tcp from 0.0.0.0/0 to 0.0.0.0/0 port 80,443 comment cf-allowlist   (and ::/0)
//! ```
//!
//! - **Read** from ufw's files only, starting no process: ufw's own tuple lines in `user.rules` /
//!   `user6.rules` (see [`tuple`]), `ENABLED=` in `ufw.conf` (is ufw active) and the defaults
//!   file; ufw counts as installed when the `ufw` program is found and its files are there. A
//!   no-op sync therefore costs no Python start. Reading never writes. Every range that an
//!   inbound allow rule of ours covers counts as live, whatever its shape (ports, protocol): a rule
//!   of another shape is reported as outdated and rewritten, but the engine's add-only and shrink
//!   guards see its range.
//! - **Apply** only the difference, one ufw command per added or deleted rule (ufw has no batch
//!   mode), all of them run by one Python process that drives ufw's frontend exactly as the CLI
//!   does ([`Driver::Frontend`], the default), or one `ufw` process each ([`Driver::Cli`]); when
//!   ufw is active an added rule is appended to the running chain without a reload.
//!   With restrict, a new allow rule is inserted (`ufw insert N`) before our deny rule, so the deny
//!   stays last among ours and an operator rule appended later still comes after it. Each step is
//!   recorded; on failure the applied steps are undone in reverse (a deleted rule is re-inserted
//!   at its old position) and the error carries ufw's output.
//! - ufw treats two rules that differ only in action or comment as *the same rule* and would
//!   silently rewrite an operator's rule when we add ours over it. Such a collision is refused
//!   before anything changes ([`BackendError::Conflict`]): operator rules are never touched.
//! - With restrict, an operator rule that lets every source reach a governed port (`ufw allow
//!   443/tcp`, `ufw allow 'Nginx Full'`, `ufw allow from any`) and comes before our deny rule
//!   would win over it: that plan is refused, naming the rule and how to delete it. Without
//!   restrict, such a rule (or a default incoming policy of ACCEPT) is reported in
//!   [`Live::warnings`]: the allowlist then does not restrict anyone.
//! - An inactive ufw (`ENABLED=no` in `ufw.conf`: ufw neither loads its rules at boot nor
//!   touches the running chains when a rule changes) keeps the rules in its files (they take
//!   effect when it is enabled) and is reported in [`Live::warnings`]; this backend never enables
//!   ufw. With `IPV6=no` in ufw's defaults, ufw ignores `user6.rules`; the IPv6 ranges are skipped
//!   with a warning.

pub mod driver;
pub mod tuple;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use cfa_core::process::CommandErrorKind;
use cfa_core::{
    AllowList, Backend, BackendError, CommandError, Family, Live, Plan, RuleSpec, Runner, Structure,
};
use ipnet::IpNet;

pub use crate::driver::Driver;
use crate::driver::{Call, Stopped};
use crate::tuple::{encode_hex, parse_rules, ports_cover, shell_line, Key, Tuple};

/// Where ufw keeps its rules and how our rules are tagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfwOptions {
    /// The comment that marks our rules (ufw stores it hex-encoded). Default `cf-allowlist`.
    pub comment: String,
    /// ufw's configuration directory, where `user.rules` and `user6.rules` are read. Default
    /// `/etc/ufw`.
    pub dir: PathBuf,
    /// ufw's defaults file (`IPV6=yes|no`, `DEFAULT_INPUT_POLICY`). Default `/etc/default/ufw`.
    pub defaults_file: PathBuf,
    /// How ufw commands run: one Python process per apply driving ufw's frontend (default), or
    /// one `ufw` process per command.
    pub driver: Driver,
}

impl Default for UfwOptions {
    fn default() -> Self {
        UfwOptions {
            comment: cfa_core::RULE_COMMENT.to_string(),
            dir: PathBuf::from("/etc/ufw"),
            defaults_file: PathBuf::from("/etc/default/ufw"),
            driver: Driver::default(),
        }
    }
}

/// The ufw backend. See the crate documentation.
#[derive(Debug, Clone)]
pub struct UfwBackend {
    options: UfwOptions,
    spec: RuleSpec,
    runner: Runner,
}

/// Whether ufw is installed and active, for `backend: auto`: the `ufw` program is found and
/// `/etc/ufw/ufw.conf` (after `/etc/default/ufw`, as ufw reads them) says `ENABLED=yes`.
///
/// The files are read through `runner` (one `cat` each), so that a runner in a network namespace
/// sees that namespace's `/etc/netns/NS/` overlay as ufw there would; no Python starts. (ufw's
/// `status` asks the kernel whether its chains are loaded; `ENABLED=yes` is what makes ufw load
/// them at boot and update them on every rule change, and the two agree unless someone flushed
/// the chains by hand.) [`is_active_in`] reads given paths directly, without any process.
pub fn is_active(runner: &Runner) -> bool {
    if !runner.has("ufw") {
        return false;
    }
    let read = |path: &str| runner.run("cat", &["--", path], None).map(|o| o.stdout);
    let Ok(conf) = read("/etc/ufw/ufw.conf") else {
        return false;
    };
    let defaults = read("/etc/default/ufw").unwrap_or_default();
    ufw_enabled(&defaults, &conf)
}

/// [`is_active`] for the files `options` names (`ufw.conf` in [`UfwOptions::dir`], the defaults
/// file), read directly: no process at all.
pub fn is_active_in(runner: &Runner, options: &UfwOptions) -> bool {
    runner.has("ufw") && matches!(read_enabled(options), Ok(true))
}

/// `ENABLED=` from ufw's files as ufw reads it; `Err` when `ufw.conf` cannot be read.
fn read_enabled(options: &UfwOptions) -> Result<bool, BackendError> {
    let conf_path = options.dir.join("ufw.conf");
    let conf =
        fs::read_to_string(&conf_path).map_err(|e| BackendError::io("reading", &conf_path, e))?;
    let path = &options.defaults_file;
    let defaults = fs::read_to_string(path).map_err(|e| BackendError::io("reading", path, e))?;
    Ok(ufw_enabled(&defaults, &conf))
}

/// Whether ufw is enabled, decided as ufw's `UFWBackend._get_defaults` and `is_enabled` do: the
/// defaults file, then `ufw.conf`, each line that starts `KEY=value` (word characters, the value
/// optionally quoted) sets the lower-cased key to the text between the first and second `=`,
/// lower-cased and stripped of quotes; the last assignment wins; enabled is `enabled == "yes"`.
fn ufw_enabled(defaults: &str, conf: &str) -> bool {
    let mut enabled = None;
    for line in defaults.lines().chain(conf.lines()) {
        if !ufw_assignment(line) {
            continue;
        }
        let mut parts = line.trim().split('=');
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        if key.to_lowercase() == "enabled" {
            enabled = Some(value.to_lowercase().trim_matches(['"', '\'']).to_string());
        }
    }
    enabled.as_deref() == Some("yes")
}

/// ufw's pattern for a settings line: `^\w+="?\w+"?`.
fn ufw_assignment(line: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let Some((key, value)) = line.split_once('=') else {
        return false;
    };
    let value = value.strip_prefix('"').unwrap_or(value);
    !key.is_empty() && key.chars().all(word) && value.starts_with(word)
}

/// ufw is missing: the error `read` and friends give, as a failed command would.
fn not_installed() -> BackendError {
    BackendError::command(
        "checking whether ufw is installed",
        CommandError {
            command: "ufw".into(),
            kind: CommandErrorKind::NotFound,
        },
    )
}

/// What ufw's defaults file says, read as ufw reads it: `KEY=value`, quotes stripped, keys
/// case-insensitive, the last assignment wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Defaults {
    /// `IPV6=yes`: ufw uses IPv6 only then.
    ipv6: bool,
    /// `DEFAULT_INPUT_POLICY`, lower-case (`drop`, `reject`, `accept`), when set.
    input_policy: Option<String>,
}

fn parse_defaults(text: &str) -> Defaults {
    let mut defaults = Defaults::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(['"', '\'']);
        if key.eq_ignore_ascii_case("ipv6") {
            defaults.ipv6 = value.eq_ignore_ascii_case("yes");
        } else if key.eq_ignore_ascii_case("default_input_policy") {
            defaults.input_policy = Some(value.to_ascii_lowercase());
        }
    }
    defaults
}

/// ufw's rules as read from its files, in ufw's order.
#[derive(Debug, Clone)]
struct Scan {
    active: bool,
    ipv6: bool,
    /// ufw's default incoming policy is ACCEPT: only deny rules keep anyone out.
    input_accept: bool,
    v4: Vec<Tuple>,
    v6: Vec<Tuple>,
}

impl Scan {
    fn family(&self, v6: bool) -> &Vec<Tuple> {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn family_mut(&mut self, v6: bool) -> &mut Vec<Tuple> {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    fn all(&self) -> impl Iterator<Item = &Tuple> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// The number `ufw insert N` takes to put a rule right before the one at `index` of a
    /// family's list, or `None` when ufw cannot address that place.
    ///
    /// ufw numbers IPv4 rules first, then IPv6, and counts the tuples of one application rule
    /// (a profile with tcp and udp ports is one tuple per protocol) once (`get_rules_count`): it
    /// refuses an N past that count, yet inserts by tuple. So a place is addressable only while
    /// its tuple index is within the counted rules.
    fn insert_number(&self, v6: bool, index: usize) -> Option<usize> {
        if index + 1 > ufw_count(self.family(v6)) {
            return None;
        }
        let offset = if v6 { ufw_count(&self.v4) } else { 0 };
        Some(offset + index + 1)
    }
}

/// ufw's count of a family's rules: the tuples of one application rule count once.
fn ufw_count(list: &[Tuple]) -> usize {
    let mut seen = BTreeSet::new();
    list.iter()
        .filter(|t| t.app_tuple().is_none_or(|k| seen.insert(k)))
        .count()
}

/// What one `ufw` call of an apply does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `ufw RULE`: appended to the end of its family's list.
    Add,
    /// `ufw insert NUMBER RULE`: lands at `index` of its family's list.
    Insert { index: usize, number: usize },
    /// `ufw delete RULE`.
    Delete,
}

/// One `ufw` call of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    op: Op,
    rule: Tuple,
}

impl Step {
    /// The `ufw` arguments, and the answers that mean ufw did it.
    fn call(&self) -> Result<(Vec<String>, &'static [&'static str]), BackendError> {
        let number;
        let (op, expect): (Vec<&str>, &'static [&'static str]) = match &self.op {
            Op::Add => (vec![], &["Rule added", "Rules updated"]),
            Op::Insert { number: n, .. } => {
                number = n.to_string();
                (vec!["insert", &number], &["Rule inserted", "Rules updated"])
            }
            Op::Delete => (vec!["delete"], &["Rule deleted", "Rules updated"]),
        };
        let args = self.rule.cli_args(&op).map_err(|e| {
            BackendError::Conflict(format!("cannot express ufw rule `{}`: {e}", self.rule))
        })?;
        Ok((args, expect))
    }

    /// Changes `model` as ufw changes its list for this step; `Err` when the rule to delete is
    /// not in the list.
    fn commit(&self, model: &mut Scan) -> Result<Applied, BackendError> {
        let list = model.family_mut(self.rule.v6);
        match &self.op {
            Op::Add => {
                list.push(self.rule.clone());
                Ok(Applied::Added(self.rule.clone()))
            }
            Op::Insert { index, .. } => {
                list.insert((*index).min(list.len()), self.rule.clone());
                Ok(Applied::Added(self.rule.clone()))
            }
            Op::Delete => {
                let index = position(list, &self.rule)?;
                list.remove(index);
                Ok(Applied::Deleted(self.rule.clone(), index))
            }
        }
    }
}

/// Where `rule` is in `list`.
fn position(list: &[Tuple], rule: &Tuple) -> Result<usize, BackendError> {
    list.iter().position(|t| t == rule).ok_or_else(|| {
        BackendError::Conflict(format!(
            "ufw rule `{rule}` is not in ufw's rules any more (changed by someone else \
             meanwhile?); run a new sync"
        ))
    })
}

/// A step that went through, with what is needed to undo it.
#[derive(Debug)]
enum Applied {
    Added(Tuple),
    /// The rule and its 0-based index in its family's list before the delete.
    Deleted(Tuple, usize),
}

impl UfwBackend {
    /// A backend for the rules described by `spec`, running `ufw` through `runner`.
    pub fn new(options: UfwOptions, spec: RuleSpec, runner: Runner) -> Self {
        UfwBackend {
            options,
            spec,
            runner,
        }
    }

    /// The families this backend actually manages: `spec.families`, minus IPv6 when ufw's
    /// defaults say `IPV6=no` (ufw then ignores `user6.rules`). The engine can drop IPv6 ranges
    /// from the desired list with this, so that a run with IPv6 off converges.
    pub fn effective_families(&self) -> Result<Vec<Family>, BackendError> {
        let ipv6 = self.defaults()?.ipv6;
        Ok(self
            .spec
            .families
            .iter()
            .copied()
            .filter(|f| *f == Family::V4 || ipv6)
            .collect())
    }

    fn defaults(&self) -> Result<Defaults, BackendError> {
        let path = &self.options.defaults_file;
        let text = fs::read_to_string(path).map_err(|e| BackendError::io("reading", path, e))?;
        Ok(parse_defaults(&text))
    }

    fn read_rules(&self, name: &str, v6: bool) -> Result<Vec<Tuple>, BackendError> {
        let path = self.options.dir.join(name);
        let text = fs::read_to_string(&path).map_err(|e| BackendError::io("reading", &path, e))?;
        parse_rules(&text, v6).map_err(|e| BackendError::Parse {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads ufw's state from its files alone (no process): whether `ufw` is installed, `ENABLED=`
    /// in `ufw.conf`, the defaults file and the rules files.
    fn scan(&self) -> Result<Scan, BackendError> {
        if self.options.comment.trim().is_empty() {
            return Err(BackendError::Conflict(
                "the ufw comment is empty: it is what tells our rules from the operator's".into(),
            ));
        }
        if !self.runner.has("ufw") {
            return Err(not_installed());
        }
        let active = read_enabled(&self.options)?;
        let defaults = self.defaults()?;
        let v4 = self.read_rules("user.rules", false)?;
        // ufw reads user6.rules only when IPv6 is on; so do we.
        let v6 = if defaults.ipv6 {
            self.read_rules("user6.rules", true)?
        } else {
            Vec::new()
        };
        Ok(Scan {
            active,
            ipv6: defaults.ipv6,
            input_accept: defaults.input_policy.as_deref() == Some("accept"),
            v4,
            v6,
        })
    }

    fn ports(&self) -> String {
        let ports: BTreeSet<u16> = self.spec.ports.iter().copied().collect();
        if ports.is_empty() {
            "any".into()
        } else {
            // ufw sorts multiport lists; writing them sorted keeps our tuples comparable.
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    /// The governed ports and protocols in words: `port 80,443 over tcp`.
    fn governed(&self) -> String {
        let ports = match self.ports().as_str() {
            "any" => "every port".to_string(),
            p => format!("port {p}"),
        };
        format!("{ports} over {}", self.spec.protocol.names().join(" and "))
    }

    fn ours(&self, t: &Tuple) -> bool {
        t.has_comment(&self.options.comment)
    }

    /// The rule we write for one range and protocol.
    fn rule_for(&self, net: IpNet, protocol: &str) -> Tuple {
        Tuple {
            action: "allow".into(),
            src: net.to_string(),
            ..self.deny_for(Family::of(&net) == Family::V6, protocol)
        }
    }

    /// Our restrict rule for one family and protocol, as ufw records
    /// `ufw deny proto tcp to any port 80,443 comment cf-allowlist` for that family.
    fn deny_for(&self, v6: bool, protocol: &str) -> Tuple {
        let any = if v6 { "::/0" } else { "0.0.0.0/0" };
        Tuple {
            action: "deny".into(),
            log: None,
            forward: false,
            protocol: protocol.into(),
            dport: self.ports(),
            dst: any.into(),
            sport: "any".into(),
            src: any.into(),
            dapp: None,
            sapp: None,
            direction: "in".into(),
            iface_in: None,
            iface_out: None,
            comment_hex: Some(encode_hex(&self.options.comment)),
            v6,
        }
    }

    /// The families that get our deny rules: with restrict, each managed family ufw holds.
    fn deny_families(&self, scan: &Scan) -> Vec<bool> {
        if !self.spec.restrict {
            return Vec::new();
        }
        [false, true]
            .into_iter()
            .filter(|&v6| {
                let family = if v6 { Family::V6 } else { Family::V4 };
                self.spec.manages(family) && (!v6 || scan.ipv6)
            })
            .collect()
    }

    /// Every deny rule restrict asks for, IPv4 first.
    fn desired_denies(&self, scan: &Scan) -> Vec<Tuple> {
        self.deny_families(scan)
            .into_iter()
            .flat_map(|v6| {
                self.spec
                    .protocol
                    .names()
                    .iter()
                    .map(move |p| self.deny_for(v6, p))
            })
            .collect()
    }

    /// If `t` is exactly a rule we would write for the current spec: its range and protocol.
    fn conforming(&self, t: &Tuple) -> Option<(IpNet, String)> {
        let net = cfa_core::parse_cidr(&t.src).ok()?;
        if !self.spec.manages(Family::of(&net)) || (Family::of(&net) == Family::V6) != t.v6 {
            return None;
        }
        if !self.spec.protocol.names().contains(&t.protocol.as_str()) {
            return None;
        }
        let want = self.rule_for(net, &t.protocol);
        (t.action == want.action && t.log.is_none() && t.key() == want.key())
            .then(|| (net, t.protocol.clone()))
    }

    /// If `t` is exactly one of the deny rules restrict asks for (`scan` says which families):
    /// its protocol.
    fn conforming_deny(&self, t: &Tuple, scan: &Scan) -> Option<String> {
        if !self.deny_families(scan).contains(&t.v6)
            || !self.spec.protocol.names().contains(&t.protocol.as_str())
        {
            return None;
        }
        let want = self.deny_for(t.v6, &t.protocol);
        (t.action == want.action && t.log.is_none() && t.key() == want.key())
            .then(|| t.protocol.clone())
    }

    /// A deny or reject rule of ours from anywhere: the shape of our restrict rule, current or
    /// not. With restrict, all our allow rules must come before the first of these.
    fn is_our_block(&self, t: &Tuple) -> bool {
        self.ours(t)
            && matches!(t.action.as_str(), "deny" | "reject")
            && !t.forward
            && t.direction == "in"
            && t.from_anywhere()
    }

    /// The range an inbound allow rule of ours lets in, whatever its ports or protocol, for a
    /// family this run manages. Such a range is live: a degraded (add-only) run must keep it and
    /// the shrink guard must count it, even though the rule is rewritten to the current shape.
    /// (Rules of ours that let nothing in from that range, such as a deny, a route or an
    /// outbound rule, are not entries: they only make the structure outdated.)
    fn covered_range(&self, t: &Tuple) -> Option<IpNet> {
        if t.action != "allow" || t.forward || t.direction != "in" {
            return None;
        }
        let net = cfa_core::parse_cidr(&t.src).ok()?;
        let family = Family::of(&net);
        ((family == Family::V6) == t.v6 && self.spec.manages(family)).then_some(net)
    }

    /// Whether an operator's rule lets every source reach a governed port over `protocol`:
    /// an `allow` or `limit`, inbound, from anywhere (to any destination, from any source port),
    /// whose ports (a single port, a list, a range, none at all, or an application profile's
    /// ports, which ufw records in the tuple) include a governed one.
    fn opens(&self, t: &Tuple, protocol: &str) -> bool {
        if self.ours(t)
            || !matches!(t.action.as_str(), "allow" | "limit")
            || t.forward
            || t.direction != "in"
            || !t.from_anywhere()
            // Only this host itself sends packets that arrive on `lo`.
            || t.iface_in.as_deref() == Some("lo")
            || (t.protocol != "any" && t.protocol != protocol)
        {
            return false;
        }
        let family = if t.v6 { Family::V6 } else { Family::V4 };
        if !self.spec.manages(family) {
            return false;
        }
        // A port field we cannot read is taken to open the ports: a refusal is safer than a
        // stranger reaching them.
        self.spec.ports.is_empty() || ports_cover(&t.dport, &self.spec.ports).unwrap_or(true)
    }

    fn opens_any(&self, t: &Tuple) -> bool {
        self.spec.protocol.names().iter().any(|p| self.opens(t, p))
    }

    /// Operator rules that `opens` a governed port and come before `end(protocol)` in their
    /// family's list (`end` is the index our deny rule for that protocol has or will have).
    fn open_before<'a>(&self, list: &'a [Tuple], end: impl Fn(&str) -> usize) -> Vec<&'a Tuple> {
        list.iter()
            .enumerate()
            .filter(|(i, t)| {
                self.spec
                    .protocol
                    .names()
                    .iter()
                    .any(|p| *i < end(p) && self.opens(t, p))
            })
            .map(|(_, t)| t)
            .collect()
    }

    /// Why restrict cannot hold with these operator rules before our deny rules.
    fn restrict_conflict(&self, open: &[&Tuple]) -> String {
        format!(
            "restrict: true cannot hold in ufw: {} let every source reach {}, and they come before \
             cf-allowlist's deny rule (ufw adds new rules last and applies the first rule that \
             matches). Delete them and sync again, or set `restrict: false`",
            describe(open),
            self.governed()
        )
    }

    fn live_from(&self, scan: &Scan) -> Live {
        let mut warnings = Vec::new();
        if !scan.active {
            warnings.push(
                "ufw is inactive: the allowlist rules are kept in ufw's files and take effect \
                 when ufw is enabled (cf-allowlist never enables it)"
                    .to_string(),
            );
        }
        if !scan.ipv6 && self.spec.manages(Family::V6) {
            let mut w = format!(
                "IPv6 is disabled in ufw (IPV6=no in {}): the IPv6 ranges are skipped",
                self.options.defaults_file.display()
            );
            if self.spec.restrict {
                w.push_str(", and ufw does not restrict IPv6 traffic to the governed ports");
            }
            warnings.push(w);
        }
        let restrict = self.spec.restrict;
        let mut reasons = Vec::new();
        // The first deny rule of ours and our deny rule for each protocol, per family.
        let mut first_block: [Option<usize>; 2] = [None, None];
        let mut denies: BTreeMap<(bool, String), usize> = BTreeMap::new();
        let mut protocols: BTreeMap<IpNet, BTreeSet<String>> = BTreeMap::new();
        let mut entries = AllowList::new();
        let mut present = false;
        for v6 in [false, true] {
            for (i, t) in scan.family(v6).iter().enumerate() {
                if !self.ours(t) {
                    continue;
                }
                present = true;
                if self.is_our_block(t) {
                    first_block[v6 as usize].get_or_insert(i);
                }
                if let Some((net, proto)) = self.conforming(t) {
                    protocols.entry(net).or_default().insert(proto);
                    if restrict && first_block[v6 as usize].is_some() {
                        reasons.push(format!(
                            "rule `{t}` comes after our deny rule, which ufw applies first"
                        ));
                    }
                    continue;
                }
                if let Some(proto) = self.conforming_deny(t, scan) {
                    denies.insert((v6, proto), i);
                    continue;
                }
                if let Some(net) = self.covered_range(t) {
                    entries.insert(net);
                }
                reasons.push(if self.is_our_block(t) && !restrict {
                    format!("rule `{t}` restricts, but the configuration says `restrict: false`")
                } else {
                    format!("rule `{t}` is not what the configuration asks for")
                });
            }
        }
        let wanted: BTreeSet<String> = self
            .spec
            .protocol
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (net, have) in protocols {
            entries.insert(net);
            if have != wanted {
                let missing: Vec<&String> = wanted.difference(&have).collect();
                reasons.push(format!("{net} has no rule for {missing:?}"));
            }
        }
        let mut open: Vec<&Tuple> = Vec::new();
        let mut shadowed: Vec<&Tuple> = Vec::new();
        for v6 in self.deny_families(scan) {
            let family = if v6 { Family::V6 } else { Family::V4 };
            for proto in self.spec.protocol.names() {
                if !denies.contains_key(&(v6, proto.to_string())) {
                    reasons.push(format!(
                        "the {family} deny rule for {proto} (restrict: true) is missing"
                    ));
                }
            }
            let list = scan.family(v6);
            // A missing deny rule is added last: every operator rule comes before it.
            let end = |p: &str| {
                denies
                    .get(&(v6, p.to_string()))
                    .copied()
                    .unwrap_or(list.len())
            };
            let before = self.open_before(list, end);
            shadowed.extend(
                list.iter()
                    .filter(|t| self.opens_any(t) && !before.contains(t)),
            );
            open.extend(before);
        }
        if !open.is_empty() {
            // First: this is the reason an operator must read.
            reasons.insert(0, self.restrict_conflict(&open));
        }
        if !shadowed.is_empty() {
            warnings.push(format!(
                "{} come after cf-allowlist's deny rule: with restrict: true they no longer let \
                 every source reach {}",
                describe(&shadowed),
                self.governed()
            ));
        }
        if !restrict {
            let open: Vec<&Tuple> = scan.all().filter(|t| self.opens_any(t)).collect();
            if !open.is_empty() {
                warnings.push(format!(
                    "the allowlist does not restrict: {} let every source reach {} \
                     (restrict: false)",
                    describe(&open),
                    self.governed()
                ));
            }
            if scan.input_accept {
                warnings.push(format!(
                    "the allowlist does not restrict: ufw's default incoming policy is ACCEPT \
                     (DEFAULT_INPUT_POLICY in {}), so every source reaches {}; set \
                     `restrict: true` or run `ufw default deny incoming`",
                    self.options.defaults_file.display(),
                    self.governed()
                ));
            }
        }
        let structure = if !present {
            Structure::Absent
        } else {
            match reasons.len() {
                0 => Structure::Current,
                1 => Structure::Outdated(reasons.remove(0)),
                n => Structure::Outdated(format!("{} (and {} more)", reasons[0], n - 1)),
            }
        };
        Live {
            entries,
            structure,
            warnings,
        }
    }

    /// The `ufw` calls that turn `scan` into the rules for `after`, in order: deletes that would
    /// collide with an add, then the allow rules to add, then (restrict) the deny rules to add,
    /// then the other deletes (so the ranges that stay never lose their rule and the port is never
    /// left without its deny). With restrict, new rules are inserted before our first deny rule,
    /// so that it stays after all our allow rules. Refuses an add that ufw would merge into an
    /// operator's rule, and (restrict) an operator rule that opens a governed port to every source
    /// ahead of our deny rule.
    fn steps(&self, scan: &Scan, after: &AllowList) -> Result<Vec<Step>, BackendError> {
        let restrict = self.spec.restrict;
        if restrict && self.spec.ports.is_empty() {
            return Err(BackendError::Conflict(
                "restrict: true needs ports: a deny of every port from every other source would \
                 lock out SSH"
                    .into(),
            ));
        }
        let mut desired: Vec<Tuple> = Vec::new();
        let mut skipped_v6 = 0;
        for net in after.iter() {
            let family = Family::of(&net);
            if !self.spec.manages(family) {
                continue;
            }
            if family == Family::V6 && !scan.ipv6 {
                skipped_v6 += 1;
                continue;
            }
            if restrict && net.prefix_len() == 0 {
                // ufw counts `allow from anywhere` and our deny from anywhere as one rule.
                return Err(BackendError::Conflict(format!(
                    "the allowlist has {net}, every address: with restrict: true that cannot be \
                     allowed and denied at once; remove it from the sources or set \
                     `restrict: false`"
                )));
            }
            for proto in self.spec.protocol.names() {
                desired.push(self.rule_for(net, proto));
            }
        }
        if skipped_v6 > 0 {
            tracing::warn!(
                skipped = skipped_v6,
                "IPv6 is disabled in ufw's defaults (IPV6=no): IPv6 ranges skipped"
            );
        }
        let denies = self.desired_denies(scan);
        let allow_keys: BTreeSet<Key> = desired.iter().map(Tuple::key).collect();
        let deny_keys: BTreeSet<Key> = denies.iter().map(Tuple::key).collect();

        // What stays: our deny rules as restrict wants them, and our allow rules as the
        // configuration wants them unless (restrict) they come after one of our deny rules,
        // where ufw would never reach them: those are deleted and added again before it.
        let mut keep: BTreeSet<Key> = BTreeSet::new();
        for v6 in [false, true] {
            let mut blocked = false;
            for t in scan.family(v6).iter().filter(|t| self.ours(t)) {
                let deny_stays =
                    self.conforming_deny(t, scan).is_some() && deny_keys.contains(&t.key());
                let allow_stays = self.conforming(t).is_some()
                    && allow_keys.contains(&t.key())
                    && !(restrict && blocked);
                if deny_stays || allow_stays {
                    keep.insert(t.key());
                }
                blocked |= self.is_our_block(t);
            }
        }
        let adds: Vec<Tuple> = desired
            .into_iter()
            .chain(denies)
            .filter(|t| !keep.contains(&t.key()))
            .collect();
        let add_keys: BTreeSet<Key> = adds.iter().map(Tuple::key).collect();
        for add in &adds {
            if let Some(other) = scan.all().find(|t| !self.ours(t) && t.key() == add.key()) {
                let ours = if add.action == "deny" {
                    "our deny rule for restrict".to_string()
                } else {
                    format!("ours for {}", add.src)
                };
                return Err(BackendError::Conflict(format!(
                    "ufw already has the rule `{other}`, which ufw counts as the same rule as \
                     {ours} (it differs only in action or comment); adding ours would rewrite the \
                     operator's rule. Delete or change that rule, or change `ufw.comment`/`ports`"
                )));
            }
        }
        let (first, last): (Vec<&Tuple>, Vec<&Tuple>) = scan
            .all()
            .filter(|t| self.ours(t) && !keep.contains(&t.key()))
            .partition(|t| add_keys.contains(&t.key()));

        // Replay the plan on a model of ufw's lists, so that each insert gets its number.
        let mut model = scan.clone();
        let mut steps: Vec<Step> = Vec::new();
        let mut push = |step: Step, model: &mut Scan| -> Result<(), BackendError> {
            step.commit(model)?;
            steps.push(step);
            Ok(())
        };
        for t in &first {
            push(
                Step {
                    op: Op::Delete,
                    rule: (*t).clone(),
                },
                &mut model,
            )?;
        }
        // Our first deny rule that stays until the adds are done, per family.
        let anchors: [Option<Tuple>; 2] = [false, true].map(|v6| {
            model
                .family(v6)
                .iter()
                .find(|t| restrict && self.is_our_block(t))
                .cloned()
        });
        // Where each deny rule ends up, in `scan`'s indices: the operator rules before it are
        // the ones that would win over it.
        let mut deny_end: BTreeMap<(bool, String), usize> = BTreeMap::new();
        for t in scan.all().filter(|t| keep.contains(&t.key())) {
            if let Some(proto) = self.conforming_deny(t, scan) {
                deny_end.insert((t.v6, proto), position(scan.family(t.v6), t)?);
            }
        }
        for rule in adds {
            let is_deny = rule.action == "deny";
            let v6 = rule.v6;
            let anchor = anchors[v6 as usize].as_ref();
            let place = match anchor {
                Some(anchor) => self.insert_place(&model, anchor, is_deny),
                None => None,
            };
            if is_deny {
                let end = match (place, anchor) {
                    (Some(_), Some(anchor)) => position(scan.family(v6), anchor)?,
                    _ => scan.family(v6).len(),
                };
                deny_end.insert((v6, rule.protocol.clone()), end);
            }
            let op = match (place, anchor) {
                (Some((index, number)), _) => Op::Insert { index, number },
                (None, Some(anchor)) if !is_deny => {
                    return Err(BackendError::Conflict(format!(
                        "cannot add `{rule}` before cf-allowlist's deny rule: ufw cannot number \
                         that place (it counts the tuples of a multi-protocol application rule \
                         once). Delete our deny rule, {}, and sync again: it is then added \
                         after all our allow rules; nothing was changed",
                        describe(&[anchor])
                    )));
                }
                // No deny of ours yet, or ufw cannot number the place before it: appended, a
                // deny ends up after every operator rule, and the check below counts them all
                // as coming before it.
                _ => Op::Add,
            };
            push(Step { op, rule }, &mut model)?;
        }
        for t in &last {
            push(
                Step {
                    op: Op::Delete,
                    rule: (*t).clone(),
                },
                &mut model,
            )?;
        }
        let mut open: Vec<&Tuple> = Vec::new();
        for v6 in self.deny_families(scan) {
            let end = |p: &str| deny_end.get(&(v6, p.to_string())).copied().unwrap_or(0);
            open.extend(self.open_before(scan.family(v6), end));
        }
        if !open.is_empty() {
            return Err(BackendError::Conflict(format!(
                "{}; nothing was changed",
                self.restrict_conflict(&open)
            )));
        }
        // Every rule we delete or add must be expressible as canonical ufw arguments.
        for s in &steps {
            s.call()?;
        }
        Ok(steps)
    }

    /// Where to insert a rule so that it lands before our deny rule `anchor`: the highest place
    /// ufw can address between the last rule before `anchor` that must stay before the new rule
    /// and `anchor` itself. For an allow that is the last operator rule (only our own rules sit
    /// in between, so ufw's verdicts do not change); for a deny, the last rule that is not a
    /// deny of ours (a deny must not get ahead of any allow). `(index, number)`.
    fn insert_place(&self, model: &Scan, anchor: &Tuple, is_deny: bool) -> Option<(usize, usize)> {
        let list = model.family(anchor.v6);
        let a = list.iter().position(|t| t == anchor)?;
        let lo = list[..a]
            .iter()
            .rposition(|t| {
                if is_deny {
                    !self.is_our_block(t)
                } else {
                    !self.ours(t)
                }
            })
            .map_or(0, |i| i + 1);
        (lo..=a)
            .rev()
            .find_map(|i| model.insert_number(anchor.v6, i).map(|n| (i, n)))
    }

    /// The command that deletes `rule`.
    fn delete_call(rule: &Tuple) -> Result<Call, BackendError> {
        let args = rule.cli_args(&["delete"]).map_err(BackendError::Conflict)?;
        Ok(Call {
            args,
            expect: &["Rule deleted", "Rules updated"],
        })
    }

    /// The command that puts a deleted rule back where it was: `ufw insert N`, or a plain add
    /// when it was last.
    fn reinsert_call(model: &Scan, rule: &Tuple, index: usize) -> Result<Call, BackendError> {
        let op = if index >= model.family(rule.v6).len() {
            Op::Add
        } else {
            let number = model.insert_number(rule.v6, index).ok_or_else(|| {
                BackendError::Conflict(format!(
                    "cannot put `{rule}` back at its place {}: ufw's numbering cannot address it",
                    index + 1
                ))
            })?;
            Op::Insert { index, number }
        };
        let (args, expect) = Step {
            op,
            rule: rule.clone(),
        }
        .call()?;
        Ok(Call { args, expect })
    }

    /// Runs `steps` against `model` (ufw's lists as scanned). Every step is first checked
    /// against the model and turned into its ufw command (a step that does not fit changes
    /// nothing); then all run in order as one batch through the driver, which stops at the first
    /// failure. On failure the applied steps are undone in reverse and the error returned.
    fn execute(&self, model: Scan, steps: Vec<Step>) -> Result<(), BackendError> {
        let mut next = model.clone();
        let mut calls = Vec::with_capacity(steps.len());
        let mut applied = Vec::with_capacity(steps.len());
        for step in &steps {
            let (args, expect) = step.call()?;
            applied.push(step.commit(&mut next)?);
            calls.push(Call { args, expect });
        }
        match driver::run(&self.runner, self.options.driver, &calls) {
            Ok(()) => {
                tracing::info!(
                    steps = steps.len(),
                    driver = %self.options.driver,
                    "ufw rules updated"
                );
                Ok(())
            }
            Err(Stopped { done, error }) => {
                // ufw's lists after the steps that went through (they fitted the model above).
                let mut state = model;
                for step in &steps[..done] {
                    if let Err(e) = step.commit(&mut state) {
                        return Err(BackendError::undo_failed(error, e));
                    }
                }
                applied.truncate(done);
                Err(self.undo(state, applied, error))
            }
        }
    }

    /// Undoes `applied` (which turned ufw's lists into `model`) in reverse, in one batch.
    fn undo(&self, mut model: Scan, applied: Vec<Applied>, cause: BackendError) -> BackendError {
        let count = applied.len();
        let mut calls = Vec::with_capacity(count);
        // An undo step that cannot even be expressed ends the undo there, as a failed one does.
        let mut unexpressible = None;
        for done in applied.into_iter().rev() {
            let call = match &done {
                Applied::Added(rule) => Self::delete_call(rule).inspect(|_| {
                    let list = model.family_mut(rule.v6);
                    if let Some(i) = list.iter().rposition(|t| t == rule) {
                        list.remove(i);
                    }
                }),
                Applied::Deleted(rule, index) => {
                    Self::reinsert_call(&model, rule, *index).inspect(|_| {
                        let list = model.family_mut(rule.v6);
                        list.insert((*index).min(list.len()), rule.clone());
                    })
                }
            };
            match call {
                Ok(call) => calls.push(call),
                Err(e) => {
                    unexpressible = Some(e);
                    break;
                }
            }
        }
        if let Err(Stopped { error, .. }) = driver::run(&self.runner, self.options.driver, &calls) {
            return BackendError::undo_failed(cause, error);
        }
        if let Some(e) = unexpressible {
            return BackendError::undo_failed(cause, e);
        }
        if count == 0 {
            return cause;
        }
        tracing::warn!(undone = count, "ufw change failed; applied steps undone");
        match cause {
            BackendError::Command { action, source } => BackendError::Command {
                action: format!("{action} (the {count} step(s) already applied were undone)"),
                source,
            },
            BackendError::Conflict(m) => BackendError::Conflict(format!(
                "{m} (the {count} step(s) already applied were undone)"
            )),
            other => other,
        }
    }
}

/// Names rules as `ufw status` shows them, with the command that deletes each (an IPv4 rule
/// and its IPv6 twin share one): ``the ufw rule(s) `443/tcp ALLOW Anywhere` and `443/tcp (v6)
/// ALLOW Anywhere (v6)` (`ufw delete allow 443/tcp`)``.
fn describe(rules: &[&Tuple]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in rules {
        let mut args = vec!["ufw".to_string()];
        args.extend(t.delete_args());
        let hint = shell_line(&args);
        let shown = format!("`{}`", t.status_text());
        match groups.iter_mut().find(|(h, _)| *h == hint) {
            Some((_, list)) => list.push(shown),
            None => groups.push((hint, vec![shown])),
        }
    }
    let text = groups
        .iter()
        .map(|(hint, shown)| format!("{} (`{hint}`)", shown.join(" and ")))
        .collect::<Vec<_>>()
        .join(", ");
    format!("the ufw rule(s) {text}")
}

impl Backend for UfwBackend {
    fn name(&self) -> &'static str {
        "ufw"
    }

    fn families(&self) -> Result<Vec<Family>, BackendError> {
        self.effective_families()
    }

    fn read(&self) -> Result<Live, BackendError> {
        let scan = self.scan()?;
        Ok(self.live_from(&scan))
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan()?;
        self.steps(&scan, &plan.after).map(|_| ())
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan()?;
        let steps = self.steps(&scan, &plan.after)?;
        self.execute(scan, steps)
    }

    fn purge(&self) -> Result<(), BackendError> {
        let scan = self.scan()?;
        if !scan.ipv6 {
            let path = self.options.dir.join("user6.rules");
            if let Ok(rules) = self.read_rules("user6.rules", true) {
                let left = rules.iter().filter(|t| self.ours(t)).count();
                if left > 0 {
                    tracing::warn!(
                        rules = left,
                        file = %path.display(),
                        "IPv6 is off in ufw, which then ignores user6.rules: our IPv6 rules there \
                         cannot be deleted through ufw and stay inert"
                    );
                }
            }
        }
        // Our deny rules go first: a purge that stops part-way leaves the allowlist's ranges
        // reachable rather than blocked behind a deny that outlived their allow rules.
        let (blocks, allows): (Vec<&Tuple>, Vec<&Tuple>) = scan
            .all()
            .filter(|t| self.ours(t))
            .partition(|t| self.is_our_block(t));
        let steps: Vec<Step> = blocks
            .into_iter()
            .chain(allows)
            .map(|t| Step {
                op: Op::Delete,
                rule: t.clone(),
            })
            .collect();
        self.execute(scan, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::Protocol;
    use proptest::prelude::*;

    /// `comment=` and the hex of `cf-allowlist`.
    const OURS: &str = "comment=63662d616c6c6f776c697374";

    const MIXED_V4: &str = include_str!("../tests/fixtures/mixed-user.rules");
    const MIXED_V6: &str = include_str!("../tests/fixtures/mixed-user6.rules");

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn backend(spec: RuleSpec) -> UfwBackend {
        UfwBackend::new(UfwOptions::default(), spec, Runner::new())
    }

    fn mixed(ipv6: bool) -> Scan {
        Scan {
            active: true,
            ipv6,
            input_accept: false,
            v4: parse_rules(MIXED_V4, false).unwrap(),
            v6: if ipv6 {
                parse_rules(MIXED_V6, true).unwrap()
            } else {
                vec![]
            },
        }
    }

    fn commands(steps: &[Step]) -> String {
        steps
            .iter()
            .map(|s| format!("ufw {}", s.call().unwrap().0.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn enabled_is_read_from_ufws_files_as_ufw_reads_them() {
        let stock_conf = "# /etc/ufw/ufw.conf\n#\n\nENABLED=no\n\nLOGLEVEL=low\n";
        let defaults = "IPV6=yes\nDEFAULT_INPUT_POLICY=\"DROP\"\n";
        assert!(!ufw_enabled(defaults, stock_conf));
        assert!(ufw_enabled(
            defaults,
            &stock_conf.replace("ENABLED=no", "ENABLED=yes")
        ));
        for (conf, enabled) in [
            ("ENABLED=\"yes\"\n", true),
            ("enabled=YES\n", true),
            ("ENABLED=yes\r\n", true),
            // The last assignment wins; ufw.conf is read after the defaults file.
            ("ENABLED=yes\nENABLED=no\n", false),
            // What ufw's `^\\w+="?\\w+"?` does not take is no assignment.
            (" ENABLED=yes\n", false),
            ("ENABLED='yes'\n", false),
            ("ENABLED = yes\n", false),
            ("#ENABLED=yes\n", false),
            // The value is the text up to a second `=` or the end, comments included.
            ("ENABLED=yes # on\n", false),
            ("", false),
        ] {
            assert_eq!(ufw_enabled("", conf), enabled, "{conf:?}");
        }
        assert!(ufw_enabled("ENABLED=yes\n", "LOGLEVEL=low\n"));
        assert!(!ufw_enabled("ENABLED=yes\n", "ENABLED=no\n"));
    }

    #[test]
    fn defaults_are_read_as_ufw_reads_them() {
        assert!(parse_defaults("# IPV6=no\nIPV6=yes\n").ipv6);
        assert!(!parse_defaults("IPV6=no\n").ipv6);
        assert!(parse_defaults("IPV6=\"yes\"\n").ipv6);
        let d = parse_defaults("DEFAULT_INPUT_POLICY=\"DROP\"\n");
        assert!(!d.ipv6);
        assert_eq!(d.input_policy.as_deref(), Some("drop"));
        let d = parse_defaults("default_input_policy='ACCEPT'\nDEFAULT_OUTPUT_POLICY=\"DROP\"\n");
        assert_eq!(d.input_policy.as_deref(), Some("accept"));
        assert_eq!(parse_defaults("").input_policy, None);
    }

    #[test]
    fn mixed_rules_read_as_outdated_with_every_range_of_ours() {
        let live = backend(RuleSpec::default()).live_from(&mixed(true));
        insta::assert_debug_snapshot!("mixed_live", live);
    }

    #[test]
    fn steps_delete_odd_rules_of_ours_and_add_the_missing_ones() {
        let b = backend(RuleSpec::default());
        // 173.245.48.0/20 is left out: the operator's uncommented rule has the same key.
        let after = list(&[
            "1.2.3.4/32",
            "104.16.0.0/13",
            "2400:cb00::/32",
            "2606:4700::/32",
        ]);
        let steps = b.steps(&mixed(true), &after).unwrap();
        insta::assert_snapshot!("mixed_steps", commands(&steps));
        // IPv6 off: no IPv6 step at all.
        let steps = b.steps(&mixed(false), &after).unwrap();
        assert!(steps.iter().all(|s| !s.rule.v6), "{}", commands(&steps));
    }

    #[test]
    fn an_add_over_an_operator_rule_with_the_same_key_is_a_conflict() {
        let b = backend(RuleSpec::default());
        let err = b
            .steps(&mixed(true), &list(&["173.245.48.0/20"]))
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("### tuple ### allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in")),
            "{err}"
        );
    }

    #[test]
    fn a_delete_colliding_with_an_add_goes_first() {
        // A `deny` of ours has the key of the `allow` we want: ufw would turn the add into an
        // update, so the delete runs first; the unrelated delete runs after the adds.
        let b = backend(RuleSpec {
            ports: vec![443],
            protocol: Protocol::Udp,
            ..RuleSpec::default()
        });
        let scan = Scan {
            active: true,
            ipv6: true,
            input_accept: false,
            v4: parse_rules(
                "### tuple ### deny udp 443 0.0.0.0/0 any 173.245.48.0/20 in comment=63662d616c6c6f776c697374\n\
                 ### tuple ### allow tcp 80 0.0.0.0/0 any 10.0.0.0/8 in comment=63662d616c6c6f776c697374\n",
                false,
            )
            .unwrap(),
            v6: vec![],
        };
        let steps = b.steps(&scan, &list(&["173.245.48.0/20"])).unwrap();
        insta::assert_snapshot!("collision_order", commands(&steps));
    }

    #[test]
    fn an_empty_comment_is_refused() {
        let b = UfwBackend::new(
            UfwOptions {
                comment: " ".into(),
                ..UfwOptions::default()
            },
            RuleSpec::default(),
            Runner::new(),
        );
        assert!(matches!(b.read(), Err(BackendError::Conflict(_))));
    }

    /// A scan of tuple lines (`{ours}` stands for our comment), ufw active, IPv6 on.
    fn scan(v4: &[&str], v6: &[&str]) -> Scan {
        let text = |lines: &[&str]| {
            lines
                .iter()
                .map(|l| format!("### tuple ### {}\n", l.replace("{ours}", OURS)))
                .collect::<String>()
        };
        Scan {
            active: true,
            ipv6: true,
            input_accept: false,
            v4: parse_rules(&text(v4), false).unwrap(),
            v6: parse_rules(&text(v6), true).unwrap(),
        }
    }

    fn restrict() -> RuleSpec {
        RuleSpec {
            restrict: true,
            ..RuleSpec::default()
        }
    }

    /// Plays `steps` on `scan` as ufw would.
    fn played(scan: &Scan, steps: &[Step]) -> Scan {
        let mut model = scan.clone();
        for s in steps {
            s.commit(&mut model).unwrap();
        }
        model
    }

    fn lines(list: &[Tuple]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn odd_shaped_rules_of_ours_count_as_live_entries() {
        // Written for other ports and protocols than the configuration's tcp 80,443: the ranges
        // are live all the same. The deny, route and outbound rules of ours let nothing in.
        let s = scan(
            &[
                "allow tcp 8080 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
                "allow udp 80,443 0.0.0.0/0 any 103.21.244.0/22 in {ours}",
                "allow_log tcp 80,443 0.0.0.0/0 any 103.22.200.0/22 in {ours}",
                "allow tcp 80,443 0.0.0.0/0 any 104.16.0.0/13 in {ours}",
                "deny tcp 80,443 0.0.0.0/0 any 192.0.2.0/24 in {ours}",
                "allow tcp 80,443 0.0.0.0/0 any 198.51.100.0/24 out {ours}",
                "route:allow tcp 80,443 0.0.0.0/0 any 203.0.113.0/24 in {ours}",
            ],
            &["allow tcp 443 ::/0 any 2400:cb00::/32 in {ours}"],
        );
        let b = backend(RuleSpec::default());
        let live = b.live_from(&s);
        let live_ranges = list(&[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "103.22.200.0/22",
            "104.16.0.0/13",
            "2400:cb00::/32",
        ]);
        assert_eq!(live.entries, live_ranges);
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("8080")),
            "{:?}",
            live.structure
        );

        // A degraded run (the engine's add-only mode) whose cache lacks most of them: the live
        // ranges stay, rewritten to the current shape; nothing is deleted without its range
        // being added back.
        let cache = list(&["104.16.0.0/13"]);
        let target = cache.union(&live.entries).aggregate();
        assert_eq!(target, live_ranges);
        let plan = Plan::new(&live, &target).unwrap();
        assert!(plan.remove.is_empty(), "{plan}");
        let steps = b.steps(&s, &plan.after).unwrap();
        let after = b.live_from(&played(&s, &steps));
        assert_eq!(after.structure, Structure::Current, "{}", commands(&steps));
        assert_eq!(after.entries, live_ranges);
        insta::assert_snapshot!("odd_shapes_rewritten", commands(&steps));

        // Families the configuration does not manage are not entries (the engine would keep
        // them in the target and the backend would not write them).
        let v4_only = backend(RuleSpec {
            families: vec![Family::V4],
            ..RuleSpec::default()
        });
        assert_eq!(
            v4_only.live_from(&s).entries,
            live_ranges.only(&[Family::V4])
        );
    }

    #[test]
    fn families_are_what_the_spec_asks_and_ufw_holds() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = dir.path().join("ufw");
        let families = |spec: Vec<Family>, text: &str| {
            fs::write(&defaults, text).unwrap();
            UfwBackend::new(
                UfwOptions {
                    defaults_file: defaults.clone(),
                    ..UfwOptions::default()
                },
                RuleSpec {
                    families: spec,
                    ..RuleSpec::default()
                },
                Runner::new(),
            )
            .families()
            .unwrap()
        };
        assert_eq!(families(Family::ALL.to_vec(), "IPV6=yes\n"), Family::ALL);
        assert_eq!(families(Family::ALL.to_vec(), "IPV6=no\n"), [Family::V4]);
        assert_eq!(families(vec![Family::V6], "IPV6=no\n"), []);
        assert_eq!(families(vec![Family::V6], "IPV6=yes\n"), [Family::V6]);
        assert_eq!(families(vec![Family::V4], "IPV6=yes\n"), [Family::V4]);

        // No deny rule for a family that is not managed.
        let b = UfwBackend::new(
            UfwOptions::default(),
            RuleSpec {
                families: vec![Family::V4],
                ..restrict()
            },
            Runner::new(),
        );
        let steps = b.steps(
            &scan(&[], &[]),
            &list(&["173.245.48.0/20", "2400:cb00::/32"]),
        );
        let steps = steps.unwrap();
        assert!(steps.iter().all(|s| !s.rule.v6), "{}", commands(&steps));
        assert_eq!(steps.len(), 2, "{}", commands(&steps));
    }

    #[test]
    fn restrict_adds_a_deny_after_our_allows_on_a_first_sync() {
        let b = backend(restrict());
        let s = scan(&["allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"], &[]);
        let live = b.live_from(&s);
        assert_eq!(live.structure, Structure::Absent);
        let after = list(&["173.245.48.0/20", "103.21.244.0/22", "2400:cb00::/32"]);
        let steps = b.steps(&s, &after).unwrap();
        insta::assert_snapshot!("restrict_first_sync", commands(&steps));
        let done = played(&s, &steps);
        let live = b.live_from(&done);
        assert_eq!(live.structure, Structure::Current);
        assert_eq!(live.entries, after);
        assert!(live.warnings.is_empty(), "{:?}", live.warnings);
        // Our deny comes last among ours, per family.
        assert!(
            done.v4.last().unwrap().action == "deny" && done.v6.last().unwrap().action == "deny"
        );
    }

    #[test]
    fn restrict_inserts_new_allows_before_our_deny() {
        // An operator's `ufw allow 443/tcp` added after our deny is shadowed by it: fine, with a
        // warning. The new range goes in before our deny, not after the operator's rule.
        let b = backend(restrict());
        let s = scan(
            &[
                "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in",
                "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
                "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in",
            ],
            &[
                "allow tcp 22 ::/0 any ::/0 in",
                "allow tcp 80,443 ::/0 any 2400:cb00::/32 in {ours}",
                "deny tcp 80,443 ::/0 any ::/0 in {ours}",
                "allow tcp 443 ::/0 any ::/0 in",
            ],
        );
        let live = b.live_from(&s);
        assert_eq!(live.structure, Structure::Current);
        assert_eq!(live.warnings.len(), 1, "{:?}", live.warnings);
        assert!(
            live.warnings[0].contains("`443/tcp ALLOW Anywhere` and `443/tcp (v6) ALLOW Anywhere (v6)` (`ufw delete allow 443/tcp`) come after cf-allowlist's deny rule"),
            "{:?}",
            live.warnings
        );
        let after = list(&[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "2400:cb00::/32",
            "2606:4700::/32",
        ]);
        let steps = b.steps(&s, &after).unwrap();
        assert_eq!(
            commands(&steps),
            "ufw insert 3 allow proto tcp from 103.21.244.0/22 to any port 80,443 comment cf-allowlist\n\
             ufw insert 8 allow proto tcp from 2606:4700::/32 to any port 80,443 comment cf-allowlist"
        );
        let done = played(&s, &steps);
        assert_eq!(done.v4[2].src, "103.21.244.0/22");
        assert_eq!(done.v6[2].src, "2606:4700::/32");
        let live = b.live_from(&done);
        assert_eq!(live.structure, Structure::Current);
        assert_eq!(live.entries, after);
    }

    #[test]
    fn restrict_refuses_an_operator_rule_that_opens_a_governed_port_first() {
        let b = backend(restrict());
        let after = list(&["173.245.48.0/20"]);
        let ours_v4 = [
            "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
            "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
        ];
        let ours_v6 = ["deny tcp 80,443 ::/0 any ::/0 in {ours}"];
        for (rule, shown, hint) in [
            (
                "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in",
                "443/tcp ALLOW Anywhere",
                "ufw delete allow 443/tcp",
            ),
            (
                "allow any 443 0.0.0.0/0 any 0.0.0.0/0 in",
                "443 ALLOW Anywhere",
                "ufw delete allow 443",
            ),
            (
                "limit tcp 443 0.0.0.0/0 any 0.0.0.0/0 in",
                "443/tcp LIMIT Anywhere",
                "ufw delete limit 443/tcp",
            ),
            (
                "allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 Nginx%20Full - in",
                "Nginx Full ALLOW Anywhere",
                "ufw delete allow 'Nginx Full'",
            ),
            (
                "allow any any 0.0.0.0/0 any 0.0.0.0/0 in",
                "Anywhere ALLOW Anywhere",
                "ufw delete allow from any to any",
            ),
            (
                "allow tcp 400:500 0.0.0.0/0 any 0.0.0.0/0 in",
                "400:500/tcp ALLOW Anywhere",
                "ufw delete allow 400:500/tcp",
            ),
            (
                "allow_log tcp 22,80 0.0.0.0/0 any 0.0.0.0/0 in",
                "22,80/tcp ALLOW Anywhere (log)",
                "ufw delete allow log 22,80/tcp",
            ),
            (
                "allow any 443 0.0.0.0/0 any 0.0.0.0/0 in_eth0",
                "443 on eth0 ALLOW Anywhere",
                "ufw delete allow in on eth0 from any to any port 443",
            ),
            (
                "allow tcp 80 10.0.0.5 53 0.0.0.0/0 in",
                "10.0.0.5 80/tcp ALLOW 53/tcp",
                "ufw delete allow proto tcp from any port 53 to 10.0.0.5/32 port 80",
            ),
            (
                "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in comment=6f7073",
                "443/tcp ALLOW Anywhere # ops",
                "ufw delete allow 443/tcp",
            ),
        ] {
            // First sync: anywhere in the list; later syncs: before our deny.
            let on_first = scan(&[rule], &[]);
            let before_ours = scan(&[&[rule][..], &ours_v4[..]].concat(), &ours_v6);
            let between = scan(&[ours_v4[0], rule, ours_v4[1]], &ours_v6);
            for s in [on_first, before_ours, between] {
                let err = b.steps(&s, &after).unwrap_err();
                let BackendError::Conflict(m) = &err else {
                    panic!("{rule}: {err:?}")
                };
                assert!(m.contains(&format!("`{shown}` (`{hint}`)")), "{rule}: {m}");
                assert!(
                    m.contains("restrict: true cannot hold") && m.contains("nothing was changed"),
                    "{m}"
                );
                if s.v4.iter().any(|t| b.ours(t)) {
                    let live = b.live_from(&s);
                    assert!(
                        matches!(&live.structure, Structure::Outdated(why) if why.contains(shown)),
                        "{rule}: {:?}",
                        live.structure
                    );
                }
            }
            // After our deny: shadowed, no conflict.
            let after_ours = scan(&[&ours_v4[..], &[rule][..]].concat(), &ours_v6);
            assert!(b.steps(&after_ours, &after).unwrap().is_empty(), "{rule}");
            assert_eq!(
                b.live_from(&after_ours).structure,
                Structure::Current,
                "{rule}"
            );
        }
        for harmless in [
            "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in",
            "allow udp 443 0.0.0.0/0 any 0.0.0.0/0 in",
            "allow tcp 8000:9000 0.0.0.0/0 any 0.0.0.0/0 in",
            "allow tcp 443 0.0.0.0/0 any 10.0.0.0/8 in",
            "deny tcp 443 0.0.0.0/0 any 0.0.0.0/0 in",
            "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in_lo",
            "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 out",
            "route:allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in",
            "allow esp any 0.0.0.0/0 any 0.0.0.0/0 in",
        ] {
            let s = scan(&[harmless], &[]);
            let steps = b.steps(&s, &after);
            assert!(steps.is_ok(), "{harmless}: {steps:?}");
        }
    }

    #[test]
    fn without_restrict_an_open_port_or_policy_is_a_warning() {
        let b = backend(RuleSpec::default());
        let mut s = scan(
            &[
                "allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 Nginx%20Full - in",
                "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in",
            ],
            &["allow tcp 80,443 ::/0 any ::/0 Nginx%20Full - in"],
        );
        let live = b.live_from(&s);
        assert_eq!(
            live.warnings,
            [
                "the allowlist does not restrict: the ufw rule(s) `Nginx Full ALLOW Anywhere` and \
              `Nginx Full (v6) ALLOW Anywhere (v6)` (`ufw delete allow 'Nginx Full'`) let every \
              source reach port 80,443 over tcp (restrict: false)"
            ]
        );
        s.v4.clear();
        s.v6.clear();
        s.input_accept = true;
        let live = b.live_from(&s);
        assert_eq!(live.warnings.len(), 1);
        assert!(
            live.warnings[0].starts_with(
                "the allowlist does not restrict: ufw's default incoming policy is ACCEPT"
            ),
            "{:?}",
            live.warnings
        );
        // With restrict the deny rule is what keeps others out: no warning.
        assert!(backend(restrict()).live_from(&s).warnings.is_empty());
    }

    #[test]
    fn restrict_off_deletes_our_deny_after_the_adds() {
        let b = backend(RuleSpec::default());
        let s = scan(
            &[
                "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
            ],
            &["deny tcp 80,443 ::/0 any ::/0 in {ours}"],
        );
        let live = b.live_from(&s);
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("restrict: false")),
            "{:?}",
            live.structure
        );
        assert_eq!(live.entries, list(&["173.245.48.0/20"]));
        let after = list(&["173.245.48.0/20", "104.16.0.0/13"]);
        let steps = b.steps(&s, &after).unwrap();
        assert_eq!(
            commands(&steps),
            "ufw allow proto tcp from 104.16.0.0/13 to any port 80,443 comment cf-allowlist\n\
             ufw delete deny proto tcp from 0.0.0.0/0 to 0.0.0.0/0 port 80,443 comment cf-allowlist\n\
             ufw delete deny proto tcp from ::/0 to ::/0 port 80,443 comment cf-allowlist"
        );
        assert_eq!(
            b.live_from(&played(&s, &steps)).structure,
            Structure::Current
        );
    }

    #[test]
    fn restrict_moves_an_allow_of_ours_that_follows_our_deny() {
        let b = backend(restrict());
        let s = scan(
            &[
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
                "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
            ],
            &["deny tcp 80,443 ::/0 any ::/0 in {ours}"],
        );
        let live = b.live_from(&s);
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("comes after our deny rule")),
            "{:?}",
            live.structure
        );
        assert_eq!(live.entries, list(&["173.245.48.0/20"]));
        let steps = b.steps(&s, &live.entries).unwrap();
        assert_eq!(
            commands(&steps),
            "ufw delete allow proto tcp from 173.245.48.0/20 to any port 80,443 comment cf-allowlist\n\
             ufw insert 1 allow proto tcp from 173.245.48.0/20 to any port 80,443 comment cf-allowlist"
        );
        assert_eq!(
            b.live_from(&played(&s, &steps)).structure,
            Structure::Current
        );
    }

    #[test]
    fn restrict_with_a_ports_change_puts_the_new_deny_where_the_old_one_was() {
        // The operator's 443/tcp came after our old deny: with the new deny in the old one's
        // place it stays shadowed, and is no conflict.
        let b = backend(RuleSpec {
            ports: vec![443],
            protocol: Protocol::Both,
            ..restrict()
        });
        let s = scan(
            &[
                "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
                "allow tcp 443,8443 0.0.0.0/0 any 0.0.0.0/0 in",
            ],
            &[],
        );
        let steps = b.steps(&s, &list(&["173.245.48.0/20"])).unwrap();
        insta::assert_snapshot!("restrict_ports_change", commands(&steps));
        let done = played(&s, &steps);
        assert_eq!(
            lines(&done.v4),
            [
                format!("### tuple ### allow tcp 443 0.0.0.0/0 any 173.245.48.0/20 in {OURS}"),
                format!("### tuple ### allow udp 443 0.0.0.0/0 any 173.245.48.0/20 in {OURS}"),
                format!("### tuple ### deny tcp 443 0.0.0.0/0 any 0.0.0.0/0 in {OURS}"),
                format!("### tuple ### deny udp 443 0.0.0.0/0 any 0.0.0.0/0 in {OURS}"),
                "### tuple ### allow tcp 443,8443 0.0.0.0/0 any 0.0.0.0/0 in".to_string(),
            ]
        );
        assert_eq!(b.live_from(&done).structure, Structure::Current);
    }

    #[test]
    fn insert_numbers_follow_ufws_count_of_application_rules() {
        // A profile with udp and tcp ports is two tuples but one numbered rule: ufw refuses a
        // number past its count, so the new allow goes in before our last allow instead.
        let b = backend(restrict());
        let samba = [
            "allow udp 137,138 0.0.0.0/0 any 10.0.0.0/8 Samba - in",
            "allow tcp 139,445 0.0.0.0/0 any 10.0.0.0/8 Samba - in",
        ];
        let s = scan(
            &[
                samba[0],
                samba[1],
                "allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in {ours}",
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
            ],
            &[
                "allow tcp 80,443 ::/0 any 2400:cb00::/32 in {ours}",
                "deny tcp 80,443 ::/0 any ::/0 in {ours}",
            ],
        );
        assert_eq!(ufw_count(&s.v4), 3);
        assert_eq!(s.insert_number(false, 3), None);
        assert_eq!(s.insert_number(false, 2), Some(3));
        assert_eq!(s.insert_number(true, 1), Some(5));
        let after = list(&[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "2400:cb00::/32",
            "2606:4700::/32",
        ]);
        let steps = b.steps(&s, &after).unwrap();
        assert_eq!(
            commands(&steps),
            "ufw insert 3 allow proto tcp from 103.21.244.0/22 to any port 80,443 comment cf-allowlist\n\
             ufw insert 6 allow proto tcp from 2606:4700::/32 to any port 80,443 comment cf-allowlist"
        );
        let done = played(&s, &steps);
        assert_eq!(b.live_from(&done).structure, Structure::Current);
        assert_eq!(b.live_from(&done).entries, after);

        // With no allow of ours before the deny there is no other place: refused, saying how.
        let s = scan(
            &[
                samba[0],
                samba[1],
                "deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in {ours}",
            ],
            &[],
        );
        let err = b.steps(&s, &list(&["173.245.48.0/20"])).unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("`ufw delete deny 80,443/tcp`")),
            "{err}"
        );
    }

    #[test]
    fn restrict_refuses_what_it_cannot_do() {
        let b = backend(restrict());
        let err = b.steps(&scan(&[], &[]), &list(&["0.0.0.0/0"])).unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("0.0.0.0/0")),
            "{err}"
        );
        let b = backend(RuleSpec {
            ports: vec![],
            ..restrict()
        });
        let err = b
            .steps(&scan(&[], &[]), &list(&["1.2.3.0/24"]))
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("needs ports")),
            "{err}"
        );
        // An operator deny with our deny's key: adding ours would re-tag theirs.
        let b = backend(restrict());
        let s = scan(&["deny tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in"], &[]);
        let err = b.steps(&s, &list(&["1.2.3.0/24"])).unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("counts as the same rule")),
            "{err}"
        );
    }

    /// A tuple line from a small pool of shapes, so that collisions and conflicts are likely.
    fn pool_line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["allow", "deny", "limit", "allow_log", "reject"]),
            prop::sample::select(vec!["tcp", "udp", "any"]),
            prop::sample::select(vec!["80,443", "443", "22", "any", "400:500"]),
            prop::sample::select(vec![
                "0.0.0.0/0",
                "173.245.48.0/20",
                "103.21.244.0/22",
                "1.2.3.4",
            ]),
            prop::sample::select(vec!["in", "out", "in_lo", "in_eth0"]),
            any::<bool>(),
        )
            .prop_map(|(action, proto, port, src, dir, ours)| {
                let port = if proto == "any" && port.contains(',') {
                    "443"
                } else {
                    port
                };
                let comment = if ours {
                    format!(" {OURS}")
                } else {
                    String::new()
                };
                format!("### tuple ### {action} {proto} {port} 0.0.0.0/0 any {src} {dir}{comment}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// rule_for -> the tuple line ufw writes (host addresses without their prefix) -> parse
        /// gives back our rule, which reads as conforming, and the same for our deny rule.
        #[test]
        fn our_rules_round_trip_through_the_tuple_text(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u8; 16]>(),
            use_v6 in any::<bool>(),
            prefix in 1u8..=128,
            ports in prop::collection::vec(1u16.., 0..5),
            protocol in prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Both]),
            comment in "\\PC{1,20}".prop_filter("not blank", |c| !c.trim().is_empty()),
        ) {
            let net: IpNet = if use_v6 {
                ipnet::Ipv6Net::new(v6.into(), prefix).unwrap().trunc().into()
            } else {
                ipnet::Ipv4Net::new(v4.into(), prefix.min(32)).unwrap().trunc().into()
            };
            let b = UfwBackend::new(
                UfwOptions { comment: comment.clone(), ..UfwOptions::default() },
                RuleSpec { ports, protocol, restrict: true, families: Family::ALL.to_vec() },
                Runner::new(),
            );
            let s = scan(&[], &[]);
            for proto in protocol.names() {
                let rule = b.rule_for(net, proto);
                let host = if use_v6 { "/128" } else { "/32" };
                let mut written = rule.clone();
                written.src = rule.src.trim_end_matches(host).to_string();
                let text = format!("# a comment line\n{written}\n-A ufw-user-input -j ACCEPT\n");
                let parsed = parse_rules(&text, use_v6).unwrap();
                prop_assert_eq!(&parsed, &vec![written.clone()]);
                prop_assert!(parsed[0].has_comment(&comment));
                prop_assert_eq!(b.conforming(&parsed[0]), Some((net, proto.to_string())));
                prop_assert!(parsed[0].cli_args(&[]).is_ok());

                let deny = b.deny_for(use_v6, proto);
                let parsed = parse_rules(&deny.to_string(), use_v6).unwrap();
                prop_assert_eq!(&parsed, &vec![deny.clone()]);
                prop_assert_eq!(b.conforming_deny(&parsed[0], &s), Some(proto.to_string()));
                prop_assert!(b.is_our_block(&parsed[0]));
                prop_assert_eq!(b.conforming(&parsed[0]), None);
            }
        }

        /// Whatever ufw's lists hold, planning never panics, and a plan that is not refused
        /// leaves rules that read back as current with exactly the planned entries.
        #[test]
        fn a_plan_read_back_is_current(
            lines4 in prop::collection::vec(pool_line(), 0..8),
            lines6 in prop::collection::vec(pool_line(), 0..3),
            after in prop::sample::subsequence(vec!["173.245.48.0/20", "103.21.244.0/22", "104.16.0.0/13", "2400:cb00::/32"], 0..=4),
            restrict in any::<bool>(),
            both in any::<bool>(),
        ) {
            // ufw keeps one rule per key: so does the scan.
            let dedup = |lines: Vec<String>, v6: bool| {
                let mut seen = BTreeSet::new();
                let text: String = lines.iter().map(|l| {
                    if v6 { l.replace("0.0.0.0/0", "::/0").replace("173.245.48.0/20", "2400:cb00::/32").replace("103.21.244.0/22", "2606:4700::/32").replace("1.2.3.4", "2001:db8::1") } else { l.clone() }
                }).map(|l| l + "\n").collect();
                let mut list = parse_rules(&text, v6).unwrap();
                list.retain(|t| seen.insert(t.key()));
                list
            };
            let s = Scan { active: true, ipv6: true, input_accept: false, v4: dedup(lines4, false), v6: dedup(lines6, true) };
            let b = backend(RuleSpec {
                restrict,
                protocol: if both { Protocol::Both } else { Protocol::Tcp },
                ..RuleSpec::default()
            });
            let live = b.live_from(&s);
            let after = list(&after);
            if let Ok(steps) = b.steps(&s, &after) {
                let mut model = s.clone();
                for step in &steps {
                    step.commit(&mut model).unwrap();
                    step.call().unwrap();
                }
                let back = b.live_from(&model);
                let nothing_of_ours = !model.all().any(|t| b.ours(t));
                prop_assert!(
                    back.structure == Structure::Current
                        || (back.structure == Structure::Absent && nothing_of_ours),
                    "{:?} after {}", back.structure, commands(&steps)
                );
                prop_assert_eq!(&back.entries, &after);
                if live.structure == Structure::Current && live.entries == after {
                    prop_assert!(steps.is_empty(), "{}", commands(&steps));
                }
            }
        }
    }
}
