//! The ufw backend: the allowlist as ordinary ufw rules, changed through the `ufw` CLI.
//!
//! Objects owned (a compatibility contract: renaming them orphans old rules): every ufw rule whose
//! comment is [`UfwOptions::comment`] (default [`cfa_core::RULE_COMMENT`], `cf-allowlist`), one per
//! range and protocol:
//!
//! ```text
//! ufw allow proto tcp from 173.245.48.0/20 to any port 80,443 comment cf-allowlist
//! ```
//!
//! - **Read** from ufw's own tuple lines in `user.rules` / `user6.rules` (see [`tuple`]), plus one
//!   `ufw status` (is ufw installed, is it active). Reading never writes.
//! - **Apply** only the difference, one `ufw` process per added or deleted rule (ufw has no batch
//!   mode); when ufw is active an added rule is appended to the running chain without a reload.
//!   Each step is recorded; on failure the applied steps are undone in reverse (a deleted rule is
//!   re-inserted at its old position) and the error carries ufw's output.
//! - ufw treats two rules that differ only in action or comment as *the same rule* and would
//!   silently rewrite an operator's rule when we add ours over it. Such a collision is refused
//!   before anything changes ([`BackendError::Conflict`]): operator rules are never touched.
//! - An inactive ufw keeps the rules in its files (they take effect when it is enabled) and is
//!   reported in [`Live::warnings`]; this backend never enables ufw. With `IPV6=no` in ufw's
//!   defaults, ufw ignores `user6.rules`; the IPv6 ranges are skipped with a warning.

pub mod tuple;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use cfa_core::{AllowList, Backend, BackendError, Family, Live, Plan, RuleSpec, Runner, Structure};
use ipnet::IpNet;

use crate::tuple::{encode_hex, parse_rules, Key, Tuple};

/// Where ufw keeps its rules and how our rules are tagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfwOptions {
    /// The comment that marks our rules (ufw stores it hex-encoded). Default `cf-allowlist`.
    pub comment: String,
    /// ufw's configuration directory, where `user.rules` and `user6.rules` are read. Default
    /// `/etc/ufw`.
    pub dir: PathBuf,
    /// ufw's defaults file (`IPV6=yes|no`). Default `/etc/default/ufw`.
    pub defaults_file: PathBuf,
}

impl Default for UfwOptions {
    fn default() -> Self {
        UfwOptions {
            comment: cfa_core::RULE_COMMENT.to_string(),
            dir: PathBuf::from("/etc/ufw"),
            defaults_file: PathBuf::from("/etc/default/ufw"),
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

/// Whether ufw is installed and active (`ufw status` says `Status: active`), for `backend: auto`.
pub fn is_active(runner: &Runner) -> bool {
    matches!(status(runner), Ok(true))
}

/// Runs `ufw status`; `Ok(true)` when active.
fn status(runner: &Runner) -> Result<bool, BackendError> {
    let out = runner
        .run("ufw", &["status"], None)
        .map_err(|e| BackendError::command("checking ufw's status (is ufw installed?)", e))?;
    parse_status(&out.stdout)
}

fn parse_status(stdout: &str) -> Result<bool, BackendError> {
    match stdout.lines().next().map(str::trim) {
        Some("Status: active") => Ok(true),
        Some("Status: inactive") => Ok(false),
        _ => Err(BackendError::Parse {
            what: "ufw status".into(),
            reason: format!("expected `Status: active` or `Status: inactive`, got {stdout:?}"),
        }),
    }
}

/// What `IPV6=` says in ufw's defaults file (ufw's own reading: `KEY=value`, quotes stripped,
/// case-insensitive). ufw uses IPv6 only when the value is `yes`.
fn parse_ipv6_default(text: &str) -> bool {
    let mut ipv6 = false;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        if key.eq_ignore_ascii_case("ipv6") {
            ipv6 = value
                .trim()
                .trim_matches(['"', '\''])
                .eq_ignore_ascii_case("yes");
        }
    }
    ipv6
}

/// ufw's rules as read from its files, in ufw's order.
#[derive(Debug, Clone)]
struct Scan {
    active: bool,
    ipv6: bool,
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
}

/// Whether a change adds or deletes a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Delete,
}

/// One `ufw` call of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    op: Op,
    rule: Tuple,
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
        let ipv6 = self.ipv6_enabled()?;
        Ok(self
            .spec
            .families
            .iter()
            .copied()
            .filter(|f| *f == Family::V4 || ipv6)
            .collect())
    }

    fn ipv6_enabled(&self) -> Result<bool, BackendError> {
        let path = &self.options.defaults_file;
        let text = fs::read_to_string(path).map_err(|e| BackendError::io("reading", path, e))?;
        Ok(parse_ipv6_default(&text))
    }

    fn read_rules(&self, name: &str, v6: bool) -> Result<Vec<Tuple>, BackendError> {
        let path = self.options.dir.join(name);
        let text = fs::read_to_string(&path).map_err(|e| BackendError::io("reading", &path, e))?;
        parse_rules(&text, v6).map_err(|e| BackendError::Parse {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads ufw's state: the defaults file, the rules files and, with `status`, `ufw status`
    /// (only `read` reports whether ufw is active; apply and purge save the ~0.1 s it costs).
    fn scan(&self, status_too: bool) -> Result<Scan, BackendError> {
        if self.options.comment.trim().is_empty() {
            return Err(BackendError::Conflict(
                "the ufw comment is empty: it is what tells our rules from the operator's".into(),
            ));
        }
        let active = if status_too {
            status(&self.runner)?
        } else {
            true
        };
        let ipv6 = self.ipv6_enabled()?;
        let v4 = self.read_rules("user.rules", false)?;
        // ufw reads user6.rules only when IPv6 is on; so do we.
        let v6 = if ipv6 {
            self.read_rules("user6.rules", true)?
        } else {
            Vec::new()
        };
        Ok(Scan {
            active,
            ipv6,
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

    /// The rule we write for one range and protocol.
    fn rule_for(&self, net: IpNet, protocol: &str) -> Tuple {
        let v6 = Family::of(&net) == Family::V6;
        Tuple {
            action: "allow".into(),
            log: None,
            forward: false,
            protocol: protocol.into(),
            dport: self.ports(),
            dst: if v6 { "::/0" } else { "0.0.0.0/0" }.into(),
            sport: "any".into(),
            src: net.to_string(),
            dapp: None,
            sapp: None,
            direction: "in".into(),
            iface_in: None,
            iface_out: None,
            comment_hex: Some(encode_hex(&self.options.comment)),
            v6,
        }
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
            warnings.push(format!(
                "IPv6 is disabled in ufw (IPV6=no in {}): the IPv6 ranges are skipped",
                self.options.defaults_file.display()
            ));
        }
        let ours: Vec<&Tuple> = scan
            .all()
            .filter(|t| t.has_comment(&self.options.comment))
            .collect();
        if ours.is_empty() {
            return Live {
                entries: AllowList::new(),
                structure: Structure::Absent,
                warnings,
            };
        }
        let mut reasons = Vec::new();
        let mut protocols: BTreeMap<IpNet, BTreeSet<String>> = BTreeMap::new();
        for t in ours {
            match self.conforming(t) {
                Some((net, proto)) => {
                    protocols.entry(net).or_default().insert(proto);
                }
                None => reasons.push(format!("rule `{t}` is not what the configuration asks for")),
            }
        }
        let wanted: BTreeSet<String> = self
            .spec
            .protocol
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut entries = AllowList::new();
        for (net, have) in protocols {
            if have == wanted {
                entries.insert(net);
            } else {
                let missing: Vec<&String> = wanted.difference(&have).collect();
                reasons.push(format!("{net} has no rule for {missing:?}"));
            }
        }
        let structure = match reasons.len() {
            0 => Structure::Current,
            1 => Structure::Outdated(reasons.remove(0)),
            n => Structure::Outdated(format!("{} (and {} more)", reasons[0], n - 1)),
        };
        Live {
            entries,
            structure,
            warnings,
        }
    }

    /// The `ufw` calls that turn `scan` into the rules for `after`, in order: deletes that would
    /// collide with an add, then adds, then the other deletes (so the ranges that stay never
    /// lose their rule). Refuses an add that ufw would merge into an operator's rule.
    fn steps(&self, scan: &Scan, after: &AllowList) -> Result<Vec<Step>, BackendError> {
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
        let ours: Vec<&Tuple> = scan
            .all()
            .filter(|t| t.has_comment(&self.options.comment))
            .collect();
        let desired_keys: BTreeSet<Key> = desired.iter().map(Tuple::key).collect();
        let keep: BTreeSet<Key> = ours
            .iter()
            .filter(|t| self.conforming(t).is_some() && desired_keys.contains(&t.key()))
            .map(|t| t.key())
            .collect();
        let adds: Vec<Tuple> = desired
            .into_iter()
            .filter(|t| !keep.contains(&t.key()))
            .collect();
        let add_keys: BTreeSet<Key> = adds.iter().map(Tuple::key).collect();
        for add in &adds {
            if let Some(other) = scan
                .all()
                .find(|t| !t.has_comment(&self.options.comment) && t.key() == add.key())
            {
                return Err(BackendError::Conflict(format!(
                    "ufw already has the rule `{other}`, which ufw counts as the same rule as ours \
                     for {} (it differs only in action or comment); adding ours would rewrite the \
                     operator's rule. Delete or change that rule, or change `ufw.comment`/`ports`",
                    add.src
                )));
            }
        }
        let (first, last): (Vec<&Tuple>, Vec<&Tuple>) = ours
            .into_iter()
            .filter(|t| !keep.contains(&t.key()))
            .partition(|t| add_keys.contains(&t.key()));
        let delete = |t: &Tuple| Step {
            op: Op::Delete,
            rule: t.clone(),
        };
        let mut steps: Vec<Step> = first.into_iter().map(delete).collect();
        steps.extend(adds.into_iter().map(|rule| Step { op: Op::Add, rule }));
        steps.extend(last.into_iter().map(delete));
        // Every rule we delete or add must be expressible as canonical ufw arguments.
        for s in &steps {
            s.rule.cli_args(&[]).map_err(|e| {
                BackendError::Conflict(format!("cannot express ufw rule `{}`: {e}", s.rule))
            })?;
        }
        Ok(steps)
    }

    /// Runs one `ufw` call and checks that it did what it was asked (ufw exits 0 also when it
    /// skipped an existing rule or could not find the rule to delete).
    fn run_ufw(&self, args: &[String], expect: &[&str]) -> Result<(), BackendError> {
        let line = format!("ufw {}", args.join(" "));
        let out = self
            .runner
            .run("ufw", args, None)
            .map_err(|e| BackendError::command(format!("running `{line}`"), e))?;
        let ok = out.stdout.lines().any(|l| {
            let l = l.trim().trim_end_matches(" (v6)");
            expect.contains(&l)
        });
        if ok {
            Ok(())
        } else {
            Err(BackendError::Conflict(format!(
                "`{line}` did not do what was asked: {}{}",
                out.stdout.trim(),
                out.stderr.trim()
            )))
        }
    }

    fn add(&self, rule: &Tuple) -> Result<(), BackendError> {
        let args = rule.cli_args(&[]).map_err(BackendError::Conflict)?;
        self.run_ufw(&args, &["Rule added", "Rules updated"])
    }

    fn delete(&self, rule: &Tuple) -> Result<(), BackendError> {
        let args = rule.cli_args(&["delete"]).map_err(BackendError::Conflict)?;
        self.run_ufw(&args, &["Rule deleted", "Rules updated"])
    }

    /// Puts a deleted rule back where it was: `ufw insert N` (ufw numbers IPv4 rules first,
    /// then IPv6), or a plain add when it was last.
    fn reinsert(&self, model: &Scan, rule: &Tuple, index: usize) -> Result<(), BackendError> {
        if index >= model.family(rule.v6).len() {
            return self.add(rule);
        }
        let offset = if rule.v6 { model.v4.len() } else { 0 };
        let position = (offset + index + 1).to_string();
        let args = rule
            .cli_args(&["insert", &position])
            .map_err(BackendError::Conflict)?;
        self.run_ufw(&args, &["Rule inserted", "Rules updated"])
    }

    /// Runs `steps` against `scan` (kept as a model of ufw's lists); on failure undoes the
    /// applied steps in reverse and returns the error.
    fn execute(&self, mut model: Scan, steps: Vec<Step>) -> Result<(), BackendError> {
        let mut applied: Vec<Applied> = Vec::new();
        for step in &steps {
            let result = match step.op {
                Op::Add => self.add(&step.rule).map(|()| {
                    model.family_mut(step.rule.v6).push(step.rule.clone());
                    Applied::Added(step.rule.clone())
                }),
                Op::Delete => {
                    let list = model.family(step.rule.v6);
                    let index = list
                        .iter()
                        .position(|t| t == &step.rule)
                        .expect("a rule we delete was read from the list");
                    self.delete(&step.rule).map(|()| {
                        model.family_mut(step.rule.v6).remove(index);
                        Applied::Deleted(step.rule.clone(), index)
                    })
                }
            };
            match result {
                Ok(done) => applied.push(done),
                Err(e) => return Err(self.undo(model, applied, e)),
            }
        }
        tracing::info!(steps = steps.len(), "ufw rules updated");
        Ok(())
    }

    fn undo(&self, mut model: Scan, applied: Vec<Applied>, cause: BackendError) -> BackendError {
        let count = applied.len();
        for done in applied.into_iter().rev() {
            let result = match &done {
                Applied::Added(rule) => self.delete(rule).map(|()| {
                    let list = model.family_mut(rule.v6);
                    if let Some(i) = list.iter().rposition(|t| t == rule) {
                        list.remove(i);
                    }
                }),
                Applied::Deleted(rule, index) => self
                    .reinsert(&model, rule, *index)
                    .map(|()| model.family_mut(rule.v6).insert(*index, rule.clone())),
            };
            if let Err(undo) = result {
                return BackendError::Conflict(format!(
                    "{cause}; undoing the applied ufw steps ALSO FAILED ({undo}): ufw's rules are \
                     half-changed, run `ufw status numbered` and a new sync"
                ));
            }
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

impl Backend for UfwBackend {
    fn name(&self) -> &'static str {
        "ufw"
    }

    fn families(&self) -> Result<Vec<Family>, BackendError> {
        self.effective_families()
    }

    fn read(&self) -> Result<Live, BackendError> {
        let scan = self.scan(true)?;
        Ok(self.live_from(&scan))
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan(false)?;
        self.steps(&scan, &plan.after).map(|_| ())
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan(false)?;
        let steps = self.steps(&scan, &plan.after)?;
        self.execute(scan, steps)
    }

    fn purge(&self) -> Result<(), BackendError> {
        let scan = self.scan(false)?;
        if !scan.ipv6 {
            let path = self.options.dir.join("user6.rules");
            if let Ok(rules) = self.read_rules("user6.rules", true) {
                let left = rules
                    .iter()
                    .filter(|t| t.has_comment(&self.options.comment))
                    .count();
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
        let steps: Vec<Step> = scan
            .all()
            .filter(|t| t.has_comment(&self.options.comment))
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
            .map(|s| {
                let op: &[&str] = match s.op {
                    Op::Add => &[],
                    Op::Delete => &["delete"],
                };
                format!("ufw {}", s.rule.cli_args(op).unwrap().join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn status_output_captured_from_ufw() {
        let active = include_str!("../tests/fixtures/status-active.txt");
        let inactive = include_str!("../tests/fixtures/status-inactive.txt");
        assert!(parse_status(active).unwrap());
        assert!(!parse_status(inactive).unwrap());
        assert!(parse_status("ERROR: problem running\n").is_err());
    }

    #[test]
    fn ipv6_default_is_read_as_ufw_reads_it() {
        assert!(parse_ipv6_default("# IPV6=no\nIPV6=yes\n"));
        assert!(!parse_ipv6_default("IPV6=no\n"));
        assert!(parse_ipv6_default("IPV6=\"yes\"\n"));
        assert!(!parse_ipv6_default("DEFAULT_INPUT_POLICY=\"DROP\"\n"));
    }

    #[test]
    fn mixed_rules_read_as_outdated_with_only_conforming_entries() {
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
}
