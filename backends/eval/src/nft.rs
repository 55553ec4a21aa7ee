//! nftables: what `nft -j list ruleset` does to the packet.
//!
//! Every base chain that sees a new TCP/UDP packet addressed to this host is evaluated in the
//! order the kernel runs it: `ingress` (netdev, inet), the bridge family's `prerouting` and
//! `input`, then `prerouting` and `input` of the `inet`, `ip` (IPv4) and `ip6` (IPv6) families.
//! The hooks are kept apart in [`HookResult::priority`] by [`HOOK_STEP`]: a chain's priority is
//! its priority on its hook minus `k * HOOK_STEP` (`k` = 4 ingress, 3 bridge prerouting,
//! 2 bridge input, 1 prerouting, 0 input), so input chains keep the priority `nft` shows and
//! sorting by it gives the kernel's order.
//!
//! Nat chains do not run at their own priority: the kernel calls them, in their priority order,
//! from its nat hook (priority 100 on input, -100 on prerouting), so that is the priority they
//! are given (their own one is in the chain's name).
//!
//! Every match is evaluated three-valued (true, false, cannot tell). A rule that cannot be
//! decided is followed both ways; only when the two ways end differently is the chain's verdict
//! [`Verdict::Unknown`], naming the expressions. So `ip daddr 192.0.2.1 tcp dport 22 accept`
//! before `policy accept` does not make the answer unknown, while the same rule before
//! `policy drop` does.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::{Evaluate, HookResult, Packet, Verdict, L4};

/// The distance between hooks in [`HookResult::priority`] (more than any nftables priority
/// spans), see the module documentation.
pub const HOOK_STEP: i64 = 1 << 33;

/// The kernel's limit on nested jumps (`NFT_JUMP_STACK_SIZE`).
const MAX_DEPTH: usize = 16;

/// How many rule evaluations one base chain may take before the evaluator gives up (a crafted
/// JSON can describe jump trees the kernel would refuse to load).
const BUDGET: usize = 200_000;

/// conntrack attaches its entry at this priority on prerouting (`NF_IP_PRI_CONNTRACK`).
const CONNTRACK_PRIO: i64 = -200;

/// A parsed `nft -j list ruleset`: its tables, sets and chains, kept for evaluation.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    tables: Vec<Table>,
}

#[derive(Debug, Clone)]
struct Table {
    family: String,
    name: String,
    /// `flags dormant`: its chains are not on any hook. `None`: flags the evaluator cannot
    /// read (nft 1.0.6 prints a dormant table's flags as its family name).
    dormant: Option<bool>,
    sets: BTreeMap<String, Vec<Value>>,
    chains: BTreeMap<String, Chain>,
    /// Chain names in the order nft listed them (for a stable order among equal priorities).
    order: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Chain {
    base: Option<Base>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Base {
    kind: String,
    hook: String,
    prio: i64,
    drop_policy: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    handle: Option<u64>,
    comment: Option<String>,
    expr: Vec<Value>,
}

fn field<'a>(obj: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("nft -j list ruleset: {what} without a \"{key}\": {obj}"))
}

impl Ruleset {
    /// Parses the JSON `nft -j list ruleset` prints. Fails only when the document is not that
    /// shape (not JSON, no `nftables` array, a table/chain/rule without its names, a base chain
    /// with a priority or policy nft never prints); expressions it does not know are kept and
    /// make evaluation answer [`Verdict::Unknown`].
    pub fn parse(json: &str) -> Result<Ruleset, String> {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| format!("nft -j list ruleset: not JSON: {e}"))?;
        let items = root
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("nft -j list ruleset: no \"nftables\" array")?;
        let mut tables: Vec<Table> = Vec::new();
        fn table_of<'t>(
            tables: &'t mut Vec<Table>,
            obj: &Value,
            what: &str,
        ) -> Result<&'t mut Table, String> {
            let family = field(obj, "family", what)?;
            let name = field(obj, if what == "table" { "name" } else { "table" }, what)?;
            let at = match tables
                .iter()
                .position(|t| t.family == family && t.name == name)
            {
                Some(at) => at,
                None => {
                    tables.push(Table {
                        family: family.to_string(),
                        name: name.to_string(),
                        dormant: Some(false),
                        sets: BTreeMap::new(),
                        chains: BTreeMap::new(),
                        order: Vec::new(),
                    });
                    tables.len() - 1
                }
            };
            Ok(&mut tables[at])
        }
        for item in items {
            if let Some(t) = item.get("table") {
                let dormant = table_flags(t.get("flags"));
                table_of(&mut tables, t, "table")?.dormant = dormant;
            } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
                let name = field(s, "name", "set")?.to_string();
                let elems = match s.get("elem") {
                    Some(Value::Array(a)) => a.clone(),
                    Some(other) => vec![other.clone()],
                    None => Vec::new(),
                };
                table_of(&mut tables, s, "set")?.sets.insert(name, elems);
            } else if let Some(c) = item.get("chain") {
                let name = field(c, "name", "chain")?.to_string();
                let base = match c.get("hook") {
                    None => None,
                    Some(hook) => {
                        let hook = hook.as_str().ok_or_else(|| {
                            format!("nft -j list ruleset: chain {name}: hook {hook}")
                        })?;
                        let family = field(c, "family", "chain")?;
                        let prio = match c.get("prio") {
                            Some(p) => priority(p, family).ok_or_else(|| {
                                format!("nft -j list ruleset: chain {name}: priority {p}")
                            })?,
                            None => 0,
                        };
                        let drop_policy = match c.get("policy").and_then(Value::as_str) {
                            None | Some("accept") => false,
                            Some("drop") => true,
                            Some(other) => {
                                return Err(format!(
                                    "nft -j list ruleset: chain {name}: policy {other}"
                                ))
                            }
                        };
                        Some(Base {
                            kind: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("filter")
                                .to_string(),
                            hook: hook.to_string(),
                            prio,
                            drop_policy,
                        })
                    }
                };
                let table = table_of(&mut tables, c, "chain")?;
                if !table.chains.contains_key(&name) {
                    table.order.push(name.clone());
                }
                table.chains.entry(name).or_default().base = base;
            } else if let Some(r) = item.get("rule") {
                let chain = field(r, "chain", "rule")?.to_string();
                let expr = match r.get("expr") {
                    Some(Value::Array(a)) => a.clone(),
                    None => Vec::new(),
                    Some(other) => vec![other.clone()],
                };
                let rule = Rule {
                    handle: r.get("handle").and_then(Value::as_u64),
                    comment: r.get("comment").and_then(Value::as_str).map(String::from),
                    expr,
                };
                let table = table_of(&mut tables, r, "rule")?;
                if !table.chains.contains_key(&chain) {
                    table.order.push(chain.clone());
                }
                table.chains.entry(chain).or_default().rules.push(rule);
            }
        }
        Ok(Ruleset { tables })
    }

    /// Leaves out the tables named (family, name), e.g. the ones iptables-nft keeps, which the
    /// [`crate::ipt`] evaluator answers for.
    pub fn without_tables(mut self, tables: &[(String, String)]) -> Ruleset {
        self.tables
            .retain(|t| !tables.iter().any(|(f, n)| *f == t.family && *n == t.name));
        self
    }

    /// Every table as (family, name), in the order nft listed them.
    pub fn tables(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| (t.family.clone(), t.name.clone()))
            .collect()
    }
}

/// Whether a table's flags make it dormant: `Some(true)` for `dormant`, `Some(false)` for none
/// or only `owner`/`persist`, `None` for anything else.
fn table_flags(flags: Option<&Value>) -> Option<bool> {
    let names: Vec<&str> = match flags {
        None => return Some(false),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().map(|f| f.as_str().unwrap_or("?")).collect(),
        Some(_) => return None,
    };
    if names.contains(&"dormant") {
        return Some(true);
    }
    if names.iter().all(|n| matches!(*n, "owner" | "persist")) {
        Some(false)
    } else {
        None
    }
}

/// A chain priority as nft -j prints it (a number) or as nft accepts it (`filter - 10`).
fn priority(v: &Value, family: &str) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let text = v.as_str()?.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let (name, rest) = match text.find(['+', '-']) {
        Some(at) => (text[..at].trim(), Some(&text[at..])),
        None => (text, None),
    };
    let bridge = family == "bridge";
    let base = match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" if bridge => -300,
        "dstnat" => -100,
        "filter" if bridge => -200,
        "filter" => 0,
        "security" => 50,
        "out" if bridge => 100,
        "srcnat" if bridge => 300,
        "srcnat" => 100,
        _ => return None,
    };
    let offset = match rest {
        None => 0,
        Some(r) => {
            let (sign, num) = r.split_at(1);
            let n: i64 = num.trim().parse().ok()?;
            if sign == "-" {
                -n
            } else {
                n
            }
        }
    };
    Some(base + offset)
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// A three-valued truth: the rule matches, does not, or the evaluator cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown(String),
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            u => u,
        }
    }

    /// Any true element makes a set match; else any unknown one leaves it open.
    fn any(items: impl IntoIterator<Item = Tri>) -> Tri {
        let mut unknown = None;
        for t in items {
            match t {
                Tri::True => return Tri::True,
                Tri::Unknown(w) => unknown = unknown.or(Some(w)),
                Tri::False => {}
            }
        }
        unknown.map_or(Tri::False, Tri::Unknown)
    }

    fn all(items: impl IntoIterator<Item = Tri>) -> Tri {
        let mut unknown = None;
        for t in items {
            match t {
                Tri::False => return Tri::False,
                Tri::Unknown(w) => unknown = unknown.or(Some(w)),
                Tri::True => {}
            }
        }
        unknown.map_or(Tri::True, Tri::Unknown)
    }
}

/// A value known or not (a mark set from something the evaluator does not know).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Known {
    Val(u64),
    Unknown(String),
}

/// What earlier statements did to the packet: marks, `notrack`, set additions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct State {
    mark: Known,
    ctmark: Known,
    notrack: bool,
    /// (table, set, key expression as JSON) added by `add`/`update @set { key }`.
    added: Vec<(String, String, String)>,
}

impl Default for State {
    fn default() -> State {
        State {
            mark: Known::Val(0),
            ctmark: Known::Val(0),
            notrack: false,
            added: Vec::new(),
        }
    }
}

/// Where the base chain runs relative to conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtPhase {
    /// Before conntrack (ingress, prerouting below -200): no entry yet, `ct state invalid`.
    Before,
    /// After it: a new entry.
    After,
    /// At its very priority (or a family without conntrack): the order is not known.
    Unsure,
}

/// A terminal outcome of a base chain on one path.
#[derive(Debug, Clone)]
struct End {
    verdict: Verdict,
    rule: String,
    state: State,
}

/// A packet field as the evaluator knows it.
#[derive(Debug, Clone)]
enum V {
    Addr(IpAddr),
    /// Ports, protocol numbers, marks, versions.
    Num(u64),
    Proto(u8),
    /// A bitmask (ct state, tcp flags): its bits and the bits that are not known.
    Flags {
        kind: FlagKind,
        val: u64,
        unknown: u64,
    },
    /// A symbolic value (nfproto, pkttype, fib type, ...): its name and number.
    Sym(&'static str, u64),
    /// The input interface: some interface that is not `lo`.
    Iface,
    /// The input interface's type: not loopback.
    IfType,
    Concat(Vec<V>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    CtState,
    TcpFlags,
}

/// What a left-hand expression gives for the packet.
enum Left {
    /// The value.
    Val(V),
    /// The expression's protocol dependency fails (`tcp dport` on UDP, `ip saddr` on IPv6):
    /// the rule does not match, whatever the operator.
    Absent,
    /// Cannot tell (a destination address, a source port).
    Unknown(String),
}

/// One base chain's evaluation: the table, the packet, where it runs, the undecided
/// expressions met on the way, the work done.
struct Ctx<'a> {
    table: &'a Table,
    packet: &'a Packet,
    phase: CtPhase,
    /// Undecided expressions the verdict may depend on, in the order met.
    forks: Vec<String>,
    /// Undecided expressions of the rules being run (innermost last).
    pending: Vec<String>,
    steps: usize,
}

/// The paths of a chain run: ended (a verdict for the base chain), returning to the caller.
#[derive(Default)]
struct Flow {
    ends: Vec<End>,
    back: Vec<State>,
}

fn dedup(states: &mut Vec<State>) {
    states.sort();
    states.dedup();
}

impl Ctx<'_> {
    fn v6(&self) -> bool {
        self.packet.src.is_ipv6()
    }

    fn rule_name(&self, chain: &str, rule: &Rule) -> String {
        let mut s = format!("{} {} {}", self.table.family, self.table.name, chain);
        if let Some(h) = rule.handle {
            let _ = write!(s, " handle {h}");
        }
        let _ = write!(s, ": {}", render_rule(&rule.expr));
        if let Some(c) = &rule.comment {
            let _ = write!(s, " comment {c:?}");
        }
        s
    }

    fn end(&self, verdict: Verdict, rule: String, state: State) -> End {
        End {
            verdict,
            rule,
            state,
        }
    }

    /// Runs `chain` from its first rule for each state.
    fn run_chain(&mut self, chain: &str, states: Vec<State>, stack: &mut Vec<String>) -> Flow {
        let mut flow = Flow::default();
        let table = self.table;
        let Some(c) = table.chains.get(chain) else {
            for st in states {
                flow.ends.push(self.end(
                    Verdict::Unknown(format!(
                        "jump to chain {chain}, which {} {} does not have",
                        table.family, table.name
                    )),
                    format!("{} {} {chain}", table.family, table.name),
                    st,
                ));
            }
            return flow;
        };
        if stack.len() > MAX_DEPTH || stack.iter().any(|s| s == chain) {
            for st in states {
                flow.ends.push(self.end(
                    Verdict::Unknown(format!(
                        "jumps nest deeper than the kernel allows or loop at chain {chain}"
                    )),
                    format!("{} {} {chain}", table.family, table.name),
                    st,
                ));
            }
            return flow;
        }
        stack.push(chain.to_string());
        let mut live = states;
        for rule in &c.rules {
            if live.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for st in live {
                self.steps += 1;
                if self.steps > BUDGET {
                    flow.ends.push(self.end(
                        Verdict::Unknown("the ruleset is too large to evaluate".into()),
                        self.rule_name(chain, rule),
                        st,
                    ));
                    continue;
                }
                let f = self.run_rule(chain, rule, st, stack);
                flow.ends.extend(f.ends);
                flow.back.extend(f.back);
                next.extend(f.next);
            }
            dedup(&mut next);
            live = next;
        }
        stack.pop();
        flow.back.extend(live);
        dedup(&mut flow.back);
        flow
    }

    /// Runs one rule's expressions in order. Returns the ended paths, the paths that go on to
    /// the next rule (`next`) and the ones that return from the chain (`back`).
    fn run_rule(
        &mut self,
        chain: &str,
        rule: &Rule,
        st: State,
        stack: &mut Vec<String>,
    ) -> RuleFlow {
        let mut out = RuleFlow::default();
        let pending = self.pending.len();
        let input = st.clone();
        let mut live = vec![st];
        for e in &rule.expr {
            let mut go = Vec::new();
            for st in live {
                self.step(chain, rule, e, st, stack, &mut go, &mut out);
            }
            dedup(&mut go);
            live = go;
            if live.is_empty() {
                break;
            }
        }
        // No verdict: the next rule.
        out.next.extend(live);
        // An undecided match followed by one that fails, or a rule that only counts, changed
        // nothing: it is not what the verdict depends on.
        let effect =
            !out.ends.is_empty() || !out.back.is_empty() || out.next.iter().any(|s| *s != input);
        for what in self.pending.split_off(pending) {
            if effect && !self.forks.contains(&what) {
                self.forks.push(what);
            }
        }
        out
    }

    /// Notes an undecided expression of the rule being run; it is named in an unknown verdict
    /// only if the rule then did something on the path that assumed it (see `run_rule`).
    fn fork(&mut self, chain: &str, rule: &Rule, why: String) {
        let mut what = format!("{why} (");
        let _ = write!(what, "{} {} {chain}", self.table.family, self.table.name);
        if let Some(h) = rule.handle {
            let _ = write!(what, " handle {h}");
        }
        what.push(')');
        self.pending.push(what);
    }

    /// One expression of a rule, for one state: pushes the states that go on to the rule's
    /// next expression onto `go`, everything else onto `out`.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        chain: &str,
        rule: &Rule,
        e: &Value,
        mut st: State,
        stack: &mut Vec<String>,
        go: &mut Vec<State>,
        out: &mut RuleFlow,
    ) {
        let Some((kind, body)) = single(e) else {
            out.ends.push(self.end(
                Verdict::Unknown(format!("expression {e}")),
                self.rule_name(chain, rule),
                st,
            ));
            return;
        };
        match kind {
            "match" => match self.eval_match(body, &st) {
                Tri::True => go.push(st),
                Tri::False => out.next.push(st),
                Tri::Unknown(why) => {
                    self.fork(chain, rule, why);
                    go.push(st.clone());
                    out.next.push(st);
                }
            },
            "counter" | "log" => go.push(st),
            "limit" | "quota" | "meter" | "numgen" => {
                // They match by traffic, which the ruleset does not say.
                self.fork(chain, rule, render_stmt(e));
                go.push(st.clone());
                out.next.push(st);
            }
            "xt" if body.get("type").and_then(Value::as_str) == Some("match") => {
                self.fork(chain, rule, render_stmt(e));
                go.push(st.clone());
                out.next.push(st);
            }
            "mangle" => {
                let key = body.get("key").unwrap_or(&Value::Null);
                let value = body.get("value").unwrap_or(&Value::Null);
                let known = match value.as_u64() {
                    Some(n) => Known::Val(n),
                    None => Known::Unknown(render_stmt(e)),
                };
                match meta_or_ct_key(key) {
                    Some(("meta", "mark")) => {
                        st.mark = known;
                        go.push(st);
                    }
                    Some(("ct", "mark")) => {
                        match self.phase {
                            CtPhase::After if !st.notrack => st.ctmark = known,
                            // No conntrack entry: the kernel skips it.
                            CtPhase::Before | CtPhase::After => {}
                            CtPhase::Unsure => st.ctmark = Known::Unknown(render_stmt(e)),
                        }
                        go.push(st);
                    }
                    Some(("meta", "nftrace" | "priority")) => go.push(st),
                    _ => out.ends.push(self.end(
                        Verdict::Unknown(render_stmt(e)),
                        self.rule_name(chain, rule),
                        st,
                    )),
                }
            }
            "notrack" => match self.phase {
                CtPhase::Before => {
                    st.notrack = true;
                    go.push(st);
                }
                CtPhase::After => go.push(st),
                CtPhase::Unsure => out.ends.push(self.end(
                    Verdict::Unknown("notrack at conntrack's own priority".into()),
                    self.rule_name(chain, rule),
                    st,
                )),
            },
            "set" => {
                let op = body.get("op").and_then(Value::as_str).unwrap_or("");
                let set = body
                    .get("set")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_start_matches('@');
                if !matches!(op, "add" | "update") || set.is_empty() {
                    out.ends.push(self.end(
                        Verdict::Unknown(render_stmt(e)),
                        self.rule_name(chain, rule),
                        st,
                    ));
                    return;
                }
                let key = body.get("elem").map(Value::to_string).unwrap_or_default();
                let entry = (self.table.name.clone(), set.to_string(), key);
                if !st.added.contains(&entry) {
                    st.added.push(entry);
                    st.added.sort();
                }
                if body.get("stmt").is_some() {
                    // `update @s { ip saddr limit rate over 5/minute }`: the statement matches.
                    self.fork(chain, rule, render_stmt(e));
                    go.push(st.clone());
                    out.next.push(st);
                } else {
                    go.push(st);
                }
            }
            "vmap" => {
                let key = body.get("key").unwrap_or(&Value::Null);
                let data = body.get("data").unwrap_or(&Value::Null);
                let pairs: Vec<Value> = match data {
                    Value::String(s) if s.starts_with('@') => match self.table.sets.get(&s[1..]) {
                        Some(elems) => elems.clone(),
                        None => {
                            out.ends.push(self.end(
                                Verdict::Unknown(format!("verdict map {s} not in the table")),
                                self.rule_name(chain, rule),
                                st,
                            ));
                            return;
                        }
                    },
                    other => match other.get("set") {
                        Some(Value::Array(a)) => a.clone(),
                        _ => {
                            out.ends.push(self.end(
                                Verdict::Unknown(render_stmt(e)),
                                self.rule_name(chain, rule),
                                st,
                            ));
                            return;
                        }
                    },
                };
                let v = match self.eval_left(key, &st) {
                    Left::Absent => {
                        out.next.push(st);
                        return;
                    }
                    Left::Unknown(why) => Err(why),
                    Left::Val(v) => Ok(v),
                };
                // Which elements' verdicts the packet may meet, and whether it may miss all.
                let mut chosen: Vec<&Value> = Vec::new();
                let mut may_miss = true;
                for pair in &pairs {
                    let (k, verdict) = match pair.as_array().map(Vec::as_slice) {
                        Some([k, verdict]) => (k, verdict),
                        _ => {
                            out.ends.push(self.end(
                                Verdict::Unknown(format!("verdict map element {pair}")),
                                self.rule_name(chain, rule),
                                st,
                            ));
                            return;
                        }
                    };
                    let t = match &v {
                        Ok(v) => elem_matches(v, k),
                        Err(why) => Tri::Unknown(why.clone()),
                    };
                    match t {
                        Tri::True => {
                            chosen = vec![verdict];
                            may_miss = false;
                            break;
                        }
                        Tri::Unknown(why) => {
                            self.fork(chain, rule, why);
                            chosen.push(verdict);
                        }
                        Tri::False => {}
                    }
                }
                for verdict in chosen {
                    self.verdict(chain, rule, verdict, st.clone(), stack, out);
                }
                if may_miss {
                    out.next.push(st);
                }
            }
            "accept" | "drop" | "reject" | "jump" | "goto" | "return" | "continue" => {
                self.verdict(chain, rule, e, st, stack, out)
            }
            _ => out.ends.push(self.end(
                Verdict::Unknown(render_stmt(e)),
                self.rule_name(chain, rule),
                st,
            )),
        }
    }

    /// A verdict statement (`accept`, `jump x`, ...), also as a verdict map's value.
    fn verdict(
        &mut self,
        chain: &str,
        rule: &Rule,
        e: &Value,
        st: State,
        stack: &mut Vec<String>,
        out: &mut RuleFlow,
    ) {
        let name = || self.rule_name(chain, rule);
        match single(e) {
            Some(("accept", _)) => out.ends.push(self.end(Verdict::Accept, name(), st)),
            Some(("drop", _)) => out.ends.push(self.end(Verdict::Drop, name(), st)),
            Some(("reject", body)) => {
                // nft adds a hidden dependency for these: `meta l4proto tcp` for a reset,
                // `meta nfproto ipv4`/`ipv6` for an ICMP type of one family.
                let applies = match body.get("type").and_then(Value::as_str) {
                    Some("tcp reset") => self.packet.proto == L4::Tcp,
                    Some("icmp") => !self.v6(),
                    Some("icmpv6") => self.v6(),
                    _ => true,
                };
                if applies {
                    out.ends.push(self.end(Verdict::Reject, name(), st));
                } else {
                    out.next.push(st);
                }
            }
            Some(("return", _)) => out.back.push(st),
            Some(("continue", _)) => out.next.push(st),
            Some((kind @ ("jump" | "goto"), body)) => {
                let Some(target) = body.get("target").and_then(Value::as_str) else {
                    out.ends
                        .push(self.end(Verdict::Unknown(format!("{kind} {body}")), name(), st));
                    return;
                };
                let rule_name = name();
                let flow = self.run_chain(target, vec![st], stack);
                for mut end in flow.ends {
                    if let Verdict::Unknown(_) = end.verdict {
                        end.rule = format!("{rule_name} -> {}", end.rule);
                    }
                    out.ends.push(end);
                }
                if kind == "jump" {
                    out.next.extend(flow.back);
                } else {
                    out.back.extend(flow.back);
                }
            }
            _ => out
                .ends
                .push(self.end(Verdict::Unknown(render_stmt(e)), name(), st)),
        }
    }

    fn eval_match(&mut self, m: &Value, st: &State) -> Tri {
        let left = m.get("left").unwrap_or(&Value::Null);
        let right = m.get("right").unwrap_or(&Value::Null);
        let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
        let v = match self.eval_left(left, st) {
            Left::Absent => return Tri::False,
            Left::Unknown(_) => return Tri::Unknown(render_match(m)),
            Left::Val(v) => v,
        };
        let unknown = || Tri::Unknown(render_match(m));
        let lookup = |ctx: &Ctx, right: &Value| -> Option<Tri> {
            if let Some(Value::Array(elems)) = right.get("set") {
                return Some(Tri::any(elems.iter().map(|el| elem_matches(&v, el))));
            }
            let name = right.as_str()?.strip_prefix('@')?;
            Some(ctx.named_set(name, left, &v, st))
        };
        let t = match op {
            "==" | "!=" => {
                let t = lookup(self, right).unwrap_or_else(|| elem_matches(&v, right));
                if op == "!=" {
                    t.not()
                } else {
                    t
                }
            }
            "in" => match lookup(self, right) {
                Some(t) => t,
                None => match &v {
                    V::Flags { kind, val, unknown } => match flags_value(*kind, right) {
                        Some(r) if val & r != 0 => Tri::True,
                        Some(r) if unknown & r != 0 => Tri::Unknown(render_match(m)),
                        Some(_) => Tri::False,
                        None => Tri::Unknown(render_match(m)),
                    },
                    _ => elem_matches(&v, right),
                },
            },
            "<" | ">" | "<=" | ">=" => match (&v, number(&v, right)) {
                (V::Num(a), Some(b)) => Tri::of(match op {
                    "<" => *a < b,
                    ">" => *a > b,
                    "<=" => *a <= b,
                    _ => *a >= b,
                }),
                _ => unknown(),
            },
            _ => unknown(),
        };
        match t {
            Tri::Unknown(why) => {
                let text = render_match(m);
                if text.contains(&why) {
                    Tri::Unknown(text)
                } else {
                    Tri::Unknown(format!("{text} ({why})"))
                }
            }
            t => t,
        }
    }

    /// A lookup in the named set `name`, counting what this packet's path added to it.
    fn named_set(&self, name: &str, left: &Value, v: &V, st: &State) -> Tri {
        let Some(elems) = self.table.sets.get(name) else {
            return Tri::Unknown(format!("set @{name}, which the table does not have"));
        };
        let found = Tri::any(elems.iter().map(|el| elem_matches(v, el)));
        if found == Tri::True {
            return found;
        }
        let key = left.to_string();
        for (table, set, added) in &st.added {
            if *table == self.table.name && set == name {
                if *added == key {
                    return Tri::True;
                }
                return Tri::Unknown(format!("set @{name}, which a rule fills on the way"));
            }
        }
        found
    }

    fn eval_left(&self, left: &Value, st: &State) -> Left {
        let unknown = || Left::Unknown(render_value(left));
        let Some((kind, body)) = single(left) else {
            return unknown();
        };
        let v6 = self.v6();
        let tcp = self.packet.proto == L4::Tcp;
        let val = |v| Left::Val(v);
        match kind {
            "payload" => {
                let proto = body.get("protocol").and_then(Value::as_str);
                let field = body.get("field").and_then(Value::as_str);
                let (Some(proto), Some(field)) = (proto, field) else {
                    return unknown();
                };
                match (proto, field) {
                    ("ip", _) if v6 => Left::Absent,
                    ("ip6", _) if !v6 => Left::Absent,
                    ("tcp", _) if !tcp => Left::Absent,
                    ("udp", _) if tcp => Left::Absent,
                    ("ip" | "ip6", "saddr") => val(V::Addr(self.packet.src)),
                    ("ip", "protocol") | ("ip6", "nexthdr") => {
                        val(V::Proto(self.packet.proto.number()))
                    }
                    ("ip", "version") => val(V::Num(4)),
                    ("ip6", "version") => val(V::Num(6)),
                    ("tcp" | "udp" | "th", "dport") => val(V::Num(self.packet.dport.into())),
                    // A SYN; whether it also asks for ECN (ECE, CWR) the packet does not say.
                    ("tcp", "flags") => val(V::Flags {
                        kind: FlagKind::TcpFlags,
                        val: 0x02,
                        unknown: 0xc0,
                    }),
                    (
                        "icmp" | "icmpv6" | "sctp" | "dccp" | "esp" | "ah" | "comp" | "udplite"
                        | "igmp" | "gre" | "gretap" | "geneve" | "vxlan",
                        _,
                    ) => Left::Absent,
                    _ => unknown(),
                }
            }
            "meta" => {
                let family = self.table.family.as_str();
                match body.get("key").and_then(Value::as_str) {
                    Some("l4proto") => val(V::Proto(self.packet.proto.number())),
                    Some("nfproto") if matches!(family, "inet" | "ip" | "ip6") => val(if v6 {
                        V::Sym("ipv6", 10)
                    } else {
                        V::Sym("ipv4", 2)
                    }),
                    Some("protocol") => val(if v6 {
                        V::Sym("ip6", 0x86dd)
                    } else {
                        V::Sym("ip", 0x0800)
                    }),
                    Some("iif" | "iifname") => val(V::Iface),
                    Some("iiftype") => val(V::IfType),
                    Some("pkttype") => val(V::Sym("host", 0)),
                    Some("mark") => match &st.mark {
                        Known::Val(n) => val(V::Num(*n)),
                        Known::Unknown(why) => Left::Unknown(why.clone()),
                    },
                    _ => unknown(),
                }
            }
            "ct" if body.get("dir").is_none() && body.get("family").is_none() => {
                let key = body.get("key").and_then(Value::as_str);
                let phase = self.phase;
                match (key, phase) {
                    (Some("state"), CtPhase::Before | CtPhase::After) => {
                        // conntrack bits: invalid 1, new 8, untracked 64.
                        let bits = if st.notrack {
                            64
                        } else if phase == CtPhase::Before {
                            1
                        } else {
                            8
                        };
                        val(V::Flags {
                            kind: FlagKind::CtState,
                            val: bits,
                            unknown: 0,
                        })
                    }
                    (Some("mark" | "direction"), CtPhase::Before) => Left::Absent,
                    (Some("mark" | "direction"), CtPhase::After) if st.notrack => Left::Absent,
                    (Some("mark"), CtPhase::After) => match &st.ctmark {
                        Known::Val(n) => val(V::Num(*n)),
                        Known::Unknown(why) => Left::Unknown(why.clone()),
                    },
                    (Some("direction"), CtPhase::After) => val(V::Sym("original", 0)),
                    _ => unknown(),
                }
            }
            "fib" => {
                let result = body.get("result").and_then(Value::as_str);
                let flags: Vec<&str> = match body.get("flags") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    Some(Value::String(s)) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                // The packet is addressed to this host.
                if result == Some("type") && flags == ["daddr"] {
                    val(V::Sym("local", 2))
                } else {
                    unknown()
                }
            }
            "&" => {
                let Some([inner, mask]) = body.as_array().map(Vec::as_slice) else {
                    return unknown();
                };
                match self.eval_left(inner, st) {
                    Left::Val(V::Flags {
                        kind,
                        val,
                        unknown: u,
                    }) => match flags_value(kind, mask) {
                        Some(m) => Left::Val(V::Flags {
                            kind,
                            val: val & m,
                            unknown: u & m,
                        }),
                        None => unknown(),
                    },
                    Left::Absent => Left::Absent,
                    _ => unknown(),
                }
            }
            "concat" => {
                let Some(parts) = body.as_array() else {
                    return unknown();
                };
                let mut vals = Vec::new();
                let mut why = None;
                for p in parts {
                    match self.eval_left(p, st) {
                        Left::Absent => return Left::Absent,
                        Left::Unknown(w) => why = why.or(Some(w)),
                        Left::Val(v) => vals.push(v),
                    }
                }
                match why {
                    Some(w) => Left::Unknown(w),
                    None => val(V::Concat(vals)),
                }
            }
            _ => unknown(),
        }
    }
}

#[derive(Default)]
struct RuleFlow {
    ends: Vec<End>,
    next: Vec<State>,
    back: Vec<State>,
}

/// `{"kind": body}`: the one key of an expression object (`"accept": null` too).
fn single(e: &Value) -> Option<(&str, &Value)> {
    let o = e.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn meta_or_ct_key(key: &Value) -> Option<(&str, &str)> {
    let (kind, body) = single(key)?;
    if !matches!(kind, "meta" | "ct") || body.get("dir").is_some() {
        return None;
    }
    Some((kind, body.get("key")?.as_str()?))
}

fn flag_bit(kind: FlagKind, name: &str) -> Option<u64> {
    Some(match (kind, name) {
        (FlagKind::CtState, "invalid") => 1,
        (FlagKind::CtState, "established") => 2,
        (FlagKind::CtState, "related") => 4,
        (FlagKind::CtState, "new") => 8,
        (FlagKind::CtState, "untracked") => 64,
        (FlagKind::TcpFlags, "fin") => 0x01,
        (FlagKind::TcpFlags, "syn") => 0x02,
        (FlagKind::TcpFlags, "rst") => 0x04,
        (FlagKind::TcpFlags, "psh") => 0x08,
        (FlagKind::TcpFlags, "ack") => 0x10,
        (FlagKind::TcpFlags, "urg") => 0x20,
        (FlagKind::TcpFlags, "ecn") => 0x40,
        (FlagKind::TcpFlags, "cwr") => 0x80,
        _ => return None,
    })
}

/// A bitmask value: a name, a number, a list of names (`["fin", "syn"]`) or `{"|": [..]}`.
fn flags_value(kind: FlagKind, v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => flag_bit(kind, s).or_else(|| parse_num(s)),
        Value::Number(n) => n.as_u64(),
        Value::Array(a) => a
            .iter()
            .try_fold(0, |acc, x| Some(acc | flags_value(kind, x)?)),
        Value::Object(_) => match single(v)? {
            ("|", Value::Array(a)) => a
                .iter()
                .try_fold(0, |acc, x| Some(acc | flags_value(kind, x)?)),
            _ => None,
        },
        _ => None,
    }
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn proto_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => Some(match s.as_str() {
            "icmp" => 1,
            "igmp" => 2,
            "tcp" => 6,
            "udp" => 17,
            "dccp" => 33,
            "ipv6" => 41,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            "icmpv6" | "ipv6-icmp" => 58,
            "comp" => 108,
            "sctp" => 132,
            "udplite" => 136,
            other => return parse_num(other),
        }),
        _ => None,
    }
}

/// A scalar on the right of an ordered comparison, as a number.
fn number(v: &V, right: &Value) -> Option<u64> {
    match v {
        V::Num(_) => match right {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => parse_num(s),
            _ => None,
        },
        _ => None,
    }
}

fn ip_of(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn ip_int(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u32::from(a).into()),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// The first and last address of `addr/len`.
fn prefix_span(addr: IpAddr, len: u64) -> Option<(u128, u128)> {
    let (v6, n) = ip_int(addr);
    let bits: u64 = if v6 { 128 } else { 32 };
    if len > bits {
        return None;
    }
    let host = bits - len;
    let mask: u128 = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    Some((n & !mask, n | mask))
}

/// Whether the packet's value `v` equals / lies in the element `el` (a scalar, prefix, range,
/// concatenation, or a set element wrapped with its timeout or comment).
fn elem_matches(v: &V, el: &Value) -> Tri {
    let unknown = || Tri::Unknown(render_value(el));
    if let Some(inner) = el.get("elem").and_then(|e| e.get("val")) {
        return elem_matches(v, inner);
    }
    if let Some(r) = el.get("range").and_then(Value::as_array) {
        let [lo, hi] = r.as_slice() else {
            return unknown();
        };
        return match v {
            V::Addr(a) => match (ip_of(lo), ip_of(hi)) {
                (Some(lo), Some(hi))
                    if lo.is_ipv6() == a.is_ipv6() && hi.is_ipv6() == a.is_ipv6() =>
                {
                    let (_, x) = ip_int(*a);
                    Tri::of(ip_int(lo).1 <= x && x <= ip_int(hi).1)
                }
                _ => unknown(),
            },
            V::Num(n) => match (number(v, lo), number(v, hi)) {
                (Some(lo), Some(hi)) => Tri::of(lo <= *n && *n <= hi),
                _ => unknown(),
            },
            V::Proto(p) => match (proto_number(lo), proto_number(hi)) {
                (Some(lo), Some(hi)) => Tri::of(lo <= u64::from(*p) && u64::from(*p) <= hi),
                _ => unknown(),
            },
            _ => unknown(),
        };
    }
    if let Some(p) = el.get("prefix") {
        let (V::Addr(a), Some(addr), Some(len)) = (
            v,
            p.get("addr").and_then(ip_of),
            p.get("len").and_then(Value::as_u64),
        ) else {
            return unknown();
        };
        if addr.is_ipv6() != a.is_ipv6() {
            return unknown();
        }
        return match prefix_span(addr, len) {
            Some((lo, hi)) => {
                let x = ip_int(*a).1;
                Tri::of(lo <= x && x <= hi)
            }
            None => unknown(),
        };
    }
    if let Some(parts) = el.get("concat").and_then(Value::as_array) {
        let V::Concat(vals) = v else {
            return unknown();
        };
        if vals.len() != parts.len() {
            return unknown();
        }
        return Tri::all(vals.iter().zip(parts).map(|(v, p)| elem_matches(v, p)));
    }
    match v {
        V::Addr(a) => match ip_of(el) {
            Some(b) if b.is_ipv6() == a.is_ipv6() => Tri::of(*a == b),
            _ => unknown(),
        },
        V::Num(n) => match number(v, el) {
            Some(b) => Tri::of(*n == b),
            None => unknown(),
        },
        V::Proto(p) => match proto_number(el) {
            Some(b) => Tri::of(u64::from(*p) == b),
            None => unknown(),
        },
        V::Flags {
            kind,
            val,
            unknown: u,
        } => match flags_value(*kind, el) {
            // Exact comparison: the known bits must agree, the unknown ones decide otherwise.
            Some(r) if (val ^ r) & !u != 0 => Tri::False,
            Some(_) if *u == 0 => Tri::True,
            _ => unknown(),
        },
        V::Sym(name, num) => match el {
            Value::String(s) if s == name => Tri::True,
            Value::String(s) if parse_num(s).is_some() => Tri::of(parse_num(s) == Some(*num)),
            Value::String(_) => Tri::False,
            Value::Number(n) => Tri::of(n.as_u64() == Some(*num)),
            _ => unknown(),
        },
        // Only `lo` is known not to be the packet's interface (ifindex 1).
        V::Iface => match el {
            Value::String(s) if s == "lo" || s == "1" => Tri::False,
            Value::Number(n) if n.as_u64() == Some(1) => Tri::False,
            _ => Tri::Unknown(format!("input interface {}", render_value(el))),
        },
        V::IfType => match el {
            Value::String(s) if s == "loopback" || s == "772" => Tri::False,
            Value::Number(n) if n.as_u64() == Some(772) => Tri::False,
            _ => Tri::Unknown(format!("input interface type {}", render_value(el))),
        },
        V::Concat(_) => unknown(),
    }
}

// ---------------------------------------------------------------------------------------------
// Base chains
// ---------------------------------------------------------------------------------------------

/// A base chain that sees the packet, with where the kernel runs it.
struct Hooked<'a> {
    table: &'a Table,
    name: &'a str,
    base: &'a Base,
    /// 0 ingress, 1 bridge prerouting, 2 bridge input, 3 prerouting, 4 input.
    rank: i64,
    /// The priority it really runs at (nat chains: the nat hook's).
    effective: i64,
}

impl Hooked<'_> {
    fn label(&self) -> String {
        let b = self.base;
        let t = self.table;
        if b.hook == "input" && b.kind == "filter" && t.family != "bridge" {
            format!(
                "{} {} {} (priority {})",
                t.family, t.name, self.name, b.prio
            )
        } else {
            format!(
                "{} {} {} ({} {}, priority {})",
                t.family, t.name, self.name, b.kind, b.hook, b.prio
            )
        }
    }

    /// Chains bound to a device or a bridge see the packet only if it arrives there.
    fn device_bound(&self) -> bool {
        self.rank < 3
    }
}

impl Ruleset {
    fn hooked(&self, v6: bool) -> Vec<Hooked<'_>> {
        let mut out = Vec::new();
        for table in &self.tables {
            let family = table.family.as_str();
            let applies = match family {
                "inet" | "netdev" | "bridge" => true,
                "ip" => !v6,
                "ip6" => v6,
                _ => false,
            };
            if !applies || table.dormant == Some(true) {
                continue;
            }
            for name in &table.order {
                let Some(base) = table.chains.get(name).and_then(|c| c.base.as_ref()) else {
                    continue;
                };
                let rank = match (family, base.hook.as_str()) {
                    ("netdev" | "inet", "ingress") => 0,
                    ("bridge", "prerouting") => 1,
                    ("bridge", "input") => 2,
                    ("inet" | "ip" | "ip6", "prerouting") => 3,
                    ("inet" | "ip" | "ip6", "input") => 4,
                    _ => continue,
                };
                let effective = match (base.kind.as_str(), rank) {
                    ("nat", 4) => 100,
                    ("nat", 3) => -100,
                    _ => base.prio,
                };
                out.push(Hooked {
                    table,
                    name,
                    base,
                    rank,
                    effective,
                });
            }
        }
        // Stable: equal priorities keep nft's listing order.
        out.sort_by_key(|h| (h.rank, h.effective));
        out
    }
}

/// Expressions that make the kernel track connections of their table's family
/// (`nf_ct_netns_get`): any `ct` expression, nat statements, synproxy, flow offload.
const CONNTRACK_USERS: [&str; 10] = [
    "ct",
    "snat",
    "dnat",
    "masquerade",
    "redirect",
    "ct helper",
    "ct timeout",
    "ct expectation",
    "synproxy",
    "flow",
];

fn uses_conntrack(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(uses_conntrack),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| CONNTRACK_USERS.contains(&k.as_str()) || uses_conntrack(v)),
        _ => false,
    }
}

impl Ruleset {
    /// Whether something in the tables of the packet's family turns conntrack on for it.
    fn conntrack_on(&self, v6: bool) -> bool {
        self.tables
            .iter()
            .filter(|t| match t.family.as_str() {
                "inet" => true,
                "ip" => !v6,
                "ip6" => v6,
                _ => false,
            })
            .any(|t| {
                t.chains
                    .values()
                    .any(|c| c.rules.iter().any(|r| r.expr.iter().any(uses_conntrack)))
            })
    }
}

/// The verdict of a base chain from all its paths' ends, naming what left it open.
fn merge(ends: &[End], forks: &[String]) -> (Verdict, Option<String>) {
    let Some(first) = ends.first() else {
        return (Verdict::Accept, None);
    };
    if let Some(u) = ends
        .iter()
        .find(|e| matches!(e.verdict, Verdict::Unknown(_)))
    {
        return (u.verdict.clone(), Some(u.rule.clone()));
    }
    let mut rules: Vec<&str> = Vec::new();
    for e in ends {
        if !rules.contains(&e.rule.as_str()) {
            rules.push(&e.rule);
        }
    }
    if ends.iter().all(|e| e.verdict == first.verdict) {
        return (first.verdict.clone(), Some(rules.join(", or else ")));
    }
    let mut kinds: Vec<String> = Vec::new();
    for e in ends {
        let k = e.verdict.to_string();
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let why = if forks.is_empty() {
        String::from("paths that end differently")
    } else {
        let shown: Vec<&str> = forks.iter().take(3).map(String::as_str).collect();
        let more = forks.len().saturating_sub(3);
        let mut s = shown.join("; ");
        if more > 0 {
            let _ = write!(s, "; and {more} more");
        }
        s
    };
    (
        Verdict::Unknown(format!("{} depending on {why}", kinds.join(" or "))),
        Some(rules.join(", or else ")),
    )
}

impl Ruleset {
    /// Runs one base chain for the packet's possible states; returns its result and the states
    /// the packet goes on with.
    fn run_hooked(
        &self,
        h: &Hooked<'_>,
        states: Vec<State>,
        packet: &Packet,
        ct_on: bool,
    ) -> (HookResult, Vec<State>) {
        let priority = h.effective - (4 - h.rank) * HOOK_STEP;
        let phase = match h.rank {
            0 => CtPhase::Before,
            1 | 2 => CtPhase::Unsure,
            3 if h.effective < CONNTRACK_PRIO => CtPhase::Before,
            3 if h.effective == CONNTRACK_PRIO => CtPhase::Unsure,
            _ => CtPhase::After,
        };
        let mut run_states = states.clone();
        if h.base.kind == "nat" {
            // Nat chains run only for packets with a conntrack entry.
            run_states.retain(|s| !s.notrack);
            if run_states.is_empty() {
                let result = HookResult {
                    chain: h.label(),
                    priority,
                    verdict: Verdict::Accept,
                    rule: None,
                };
                return (result, states);
            }
        }
        let mut ctx = Ctx {
            table: h.table,
            packet,
            phase,
            forks: Vec::new(),
            pending: Vec::new(),
            steps: 0,
        };
        let flow = ctx.run_chain(h.name, run_states, &mut Vec::new());
        let mut ends = flow.ends;
        let policy = format!(
            "{} {} {}: policy {}",
            h.table.family,
            h.table.name,
            h.name,
            if h.base.drop_policy { "drop" } else { "accept" }
        );
        for st in flow.back {
            let verdict = if h.base.drop_policy {
                Verdict::Drop
            } else {
                Verdict::Accept
            };
            ends.push(ctx.end(verdict, policy.clone(), st));
        }
        let (mut verdict, rule) = merge(&ends, &ctx.forks);
        let nat_unsure = h.base.kind == "nat" && !ct_on;
        if nat_unsure && verdict != Verdict::Accept {
            // The kernel calls nat chains only for packets conntrack follows, and conntrack
            // runs only once something asks for it.
            verdict = Verdict::Unknown(format!(
                "{verdict} if conntrack is active for IPv{}; nothing in this nftables \
                 ruleset activates it (iptables rules may)",
                if packet.src.is_ipv6() { 6 } else { 4 }
            ));
        }
        let maybe_dormant = h.table.dormant.is_none();
        if maybe_dormant && verdict != Verdict::Accept {
            verdict = Verdict::Unknown(format!(
                "{verdict} unless table {} {} is dormant (nft printed flags it does not \
                 name)",
                h.table.family, h.table.name
            ));
        }
        if h.device_bound() && verdict != Verdict::Accept {
            let place = if h.table.family == "bridge" {
                "through a bridge"
            } else {
                "on the device the chain is bound to"
            };
            verdict = Verdict::Unknown(format!("{verdict} when the packet arrives {place}"));
        }
        let mut next: Vec<State> = ends
            .into_iter()
            .filter(|e| e.verdict == Verdict::Accept)
            .map(|e| e.state)
            .collect();
        if h.device_bound() || nat_unsure || maybe_dormant {
            // The chain may not see the packet at all (it arrives elsewhere, conntrack is off,
            // the table is dormant): it goes on as it came.
            next.extend(states);
        } else if h.base.kind == "nat" {
            next.extend(states.into_iter().filter(|s| s.notrack));
        }
        dedup(&mut next);
        let result = HookResult {
            chain: h.label(),
            priority,
            verdict,
            rule,
        };
        (result, next)
    }

    /// Runs chains in the order given, threading the packet's states; stops when no path is
    /// left.
    fn run_sequence(
        &self,
        chains: &[&Hooked<'_>],
        mut states: Vec<State>,
        packet: &Packet,
        ct_on: bool,
    ) -> (Vec<HookResult>, Vec<State>) {
        let mut results = Vec::new();
        for h in chains {
            if states.is_empty() {
                // Every path was refused or left open before this chain.
                break;
            }
            let (r, next) = self.run_hooked(h, states, packet, ct_on);
            results.push(r);
            states = next;
        }
        (results, states)
    }
}

/// The orders the kernel may run a group of chains at one priority in: any, except that nat
/// chains run together, from the one nat hook, in the order of their own priorities.
fn orders(n: usize, nat: &[bool], prio: &[i64]) -> Vec<Vec<usize>> {
    fn permute(rest: &mut Vec<usize>, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(cur.clone());
            return;
        }
        for i in 0..rest.len() {
            let x = rest.remove(i);
            cur.push(x);
            permute(rest, cur, out);
            cur.pop();
            rest.insert(i, x);
        }
    }
    let mut all = Vec::new();
    if n <= 6 {
        permute(&mut (0..n).collect(), &mut Vec::new(), &mut all);
    } else {
        all.push((0..n).collect());
        all.push((0..n).rev().collect());
    }
    all.retain(|o| {
        let nats: Vec<usize> = o
            .iter()
            .enumerate()
            .filter(|(_, &c)| nat[c])
            .map(|(i, _)| i)
            .collect();
        let together = nats.windows(2).all(|w| w[1] == w[0] + 1);
        let sorted = nats.windows(2).all(|w| prio[o[w[0]]] <= prio[o[w[1]]]);
        together && sorted
    });
    all
}

fn kind(v: &Verdict) -> u8 {
    match v {
        Verdict::Accept => 0,
        Verdict::Drop => 1,
        Verdict::Reject => 2,
        Verdict::Unknown(_) => 3,
    }
}

impl Evaluate for Ruleset {
    fn evaluate(&self, packet: &Packet) -> Vec<HookResult> {
        let v6 = packet.src.is_ipv6();
        let ct_on = self.conntrack_on(v6);
        let hooked = self.hooked(v6);
        let mut results = Vec::new();
        let mut states = vec![State::default()];
        let mut at = 0;
        while at < hooked.len() && !states.is_empty() {
            // The chains at one priority of one hook: the kernel runs the one registered last
            // first, but which that was the ruleset does not show (chain handles count per
            // table), so every order is tried and the answer is unknown if they differ.
            let key = (hooked[at].rank, hooked[at].effective);
            let mut group: Vec<&Hooked<'_>> = hooked[at..]
                .iter()
                .take_while(|h| (h.rank, h.effective) == key)
                .collect();
            at += group.len();
            // Most likely first: nat chains by their priority, the others newest (listed last)
            // first.
            group.reverse();
            group.sort_by_key(|h| {
                let nat = h.base.kind == "nat";
                (nat, if nat { h.base.prio } else { 0 })
            });
            if group.len() == 1 {
                let (r, next) = self.run_sequence(&group, states, packet, ct_on);
                results.extend(r);
                states = next;
                continue;
            }
            let nat: Vec<bool> = group.iter().map(|h| h.base.kind == "nat").collect();
            let prio: Vec<i64> = group.iter().map(|h| h.base.prio).collect();
            let mut first: Option<(Vec<HookResult>, Vec<State>)> = None;
            let mut differ = false;
            let mut all_states: Vec<State> = Vec::new();
            for order in orders(group.len(), &nat, &prio) {
                let chains: Vec<&Hooked<'_>> = order.iter().map(|&i| group[i]).collect();
                let (r, next) = self.run_sequence(&chains, states.clone(), packet, ct_on);
                all_states.extend(next.iter().cloned());
                let verdict = kind(&crate::combine(&r).verdict);
                match &first {
                    None => first = Some((r, next)),
                    Some((r0, n0)) => {
                        if kind(&crate::combine(r0).verdict) != verdict || *n0 != next {
                            differ = true;
                        }
                    }
                }
            }
            let Some((mut r, next)) = first else {
                break;
            };
            if differ {
                let names: Vec<String> = group.iter().map(|h| h.label()).collect();
                for x in &mut r {
                    x.verdict = Verdict::Unknown(format!(
                        "the verdict depends on the order the kernel runs {}, at one priority, \
                         which the ruleset does not show",
                        names.join(" and ")
                    ));
                }
                dedup(&mut all_states);
                states = all_states;
            } else {
                states = next;
            }
            results.extend(r);
        }
        results
    }

    fn boundaries(&self, v6: bool) -> Vec<IpAddr> {
        let mut points: Vec<u128> = Vec::new();
        for t in &self.tables {
            for elems in t.sets.values() {
                for el in elems {
                    collect_points(el, v6, &mut points);
                }
            }
            for c in t.chains.values() {
                for r in &c.rules {
                    for e in &r.expr {
                        collect_points(e, v6, &mut points);
                    }
                }
            }
        }
        points.sort_unstable();
        points.dedup();
        points
            .into_iter()
            .map(|n| {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(n))
                } else {
                    IpAddr::V4(Ipv4Addr::from(n as u32))
                }
            })
            .collect()
    }
}

/// Adds the first address and the one after the last of every address, prefix and range in
/// `v` (of the family) to `out`, skipping the one past the family's last address.
fn collect_points(v: &Value, v6: bool, out: &mut Vec<u128>) {
    let max: u128 = if v6 { u128::MAX } else { u32::MAX.into() };
    let mut span = |lo: u128, hi: u128| {
        out.push(lo);
        if hi < max {
            out.push(hi + 1);
        }
    };
    match v {
        Value::String(s) => {
            if let Ok(a) = s.parse::<IpAddr>() {
                if a.is_ipv6() == v6 {
                    let n = ip_int(a).1;
                    span(n, n);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                collect_points(x, v6, out);
            }
        }
        Value::Object(o) => {
            if let Some(Value::Array(r)) = o.get("range") {
                if let [Some(lo), Some(hi)] = [r.first().and_then(ip_of), r.get(1).and_then(ip_of)]
                {
                    if r.len() == 2 && lo.is_ipv6() == v6 && hi.is_ipv6() == v6 {
                        let (l, h) = (ip_int(lo).1, ip_int(hi).1);
                        if l <= h {
                            span(l, h);
                        }
                    }
                    return;
                }
            }
            if let Some(p) = o.get("prefix") {
                if let (Some(addr), Some(len)) = (
                    p.get("addr").and_then(ip_of),
                    p.get("len").and_then(Value::as_u64),
                ) {
                    if addr.is_ipv6() == v6 {
                        if let Some((lo, hi)) = prefix_span(addr, len) {
                            span(lo, hi);
                        }
                    }
                    return;
                }
            }
            for x in o.values() {
                collect_points(x, v6, out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering rules the way nft prints them (close enough for an operator to find the rule)
// ---------------------------------------------------------------------------------------------

fn render_rule(exprs: &[Value]) -> String {
    exprs.iter().map(render_stmt).collect::<Vec<_>>().join(" ")
}

fn render_match(m: &Value) -> String {
    let left = m.get("left").map(render_value).unwrap_or_default();
    let right = m.get("right").map(render_value).unwrap_or_default();
    match m.get("op").and_then(Value::as_str) {
        None | Some("==") | Some("in") => format!("{left} {right}"),
        Some(op) => format!("{left} {op} {right}"),
    }
}

fn render_stmt(e: &Value) -> String {
    let Some((kind, body)) = single(e) else {
        return e.to_string();
    };
    match kind {
        "match" => render_match(body),
        "accept" | "drop" | "return" | "continue" | "notrack" => kind.to_string(),
        "counter" => "counter".into(),
        "jump" | "goto" => format!(
            "{kind} {}",
            body.get("target").and_then(Value::as_str).unwrap_or("?")
        ),
        "reject" => match (
            body.get("type").and_then(Value::as_str),
            body.get("expr").and_then(Value::as_str),
        ) {
            (Some("tcp reset"), _) => "reject with tcp reset".into(),
            (Some(t), Some(x)) => format!("reject with {t} {x}"),
            _ => "reject".into(),
        },
        "log" => match body.get("prefix").and_then(Value::as_str) {
            Some(p) => format!("log prefix {p:?}"),
            None => "log".into(),
        },
        "limit" => {
            let over = if body.get("inv").and_then(Value::as_bool) == Some(true) {
                "over "
            } else {
                ""
            };
            format!(
                "limit rate {over}{}/{}",
                body.get("rate").map(render_value).unwrap_or_default(),
                body.get("per").map(render_value).unwrap_or_default()
            )
        }
        "vmap" => format!(
            "{} vmap {}",
            body.get("key").map(render_value).unwrap_or_default(),
            body.get("data").map(render_value).unwrap_or_default()
        ),
        "mangle" => format!(
            "{} set {}",
            body.get("key").map(render_value).unwrap_or_default(),
            body.get("value").map(render_value).unwrap_or_default()
        ),
        "set" => {
            let mut elem = body.get("elem").map(render_value).unwrap_or_default();
            if let Some(Value::Array(stmts)) = body.get("stmt") {
                for st in stmts {
                    elem.push(' ');
                    elem.push_str(&render_stmt(st));
                }
            }
            format!(
                "{} {} {{ {elem} }}",
                body.get("op").and_then(Value::as_str).unwrap_or("?"),
                body.get("set").and_then(Value::as_str).unwrap_or("?"),
            )
        }
        _ => e.to_string(),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(render_value).collect::<Vec<_>>().join(","),
        Value::Object(_) => {
            let Some((kind, body)) = single(v) else {
                return v.to_string();
            };
            let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?");
            match kind {
                "payload" => match body.get("protocol") {
                    Some(_) => format!("{} {}", s("protocol"), s("field")),
                    None => v.to_string(),
                },
                "meta" => format!("meta {}", s("key")),
                "ct" => format!("ct {}", s("key")),
                "fib" => format!(
                    "fib {} {}",
                    body.get("flags")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().map(render_value).collect::<Vec<_>>().join(" . "))
                        .unwrap_or_default(),
                    s("result")
                ),
                "prefix" => format!(
                    "{}/{}",
                    body.get("addr").map(render_value).unwrap_or_default(),
                    body.get("len").map(render_value).unwrap_or_default()
                ),
                "range" => match body.as_array().map(Vec::as_slice) {
                    Some([a, b]) => format!("{}-{}", render_value(a), render_value(b)),
                    _ => v.to_string(),
                },
                "set" => match body.as_array() {
                    Some(a) => format!(
                        "{{ {} }}",
                        a.iter()
                            .map(|x| match x.as_array().map(Vec::as_slice) {
                                Some([k, d]) => format!("{} : {}", render_value(k), render_stmt(d)),
                                _ => render_value(x),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => v.to_string(),
                },
                "concat" => match body.as_array() {
                    Some(a) => a.iter().map(render_value).collect::<Vec<_>>().join(" . "),
                    None => v.to_string(),
                },
                "elem" => body.get("val").map(render_value).unwrap_or_default(),
                "&" | "|" | "^" => match body.as_array().map(Vec::as_slice) {
                    Some([a, b]) => format!("{} {kind} {}", render_value(a), render_value(b)),
                    Some(a) => a.iter().map(render_value).collect::<Vec<_>>().join(kind),
                    None => v.to_string(),
                },
                _ => v.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_priorities_and_offsets() {
        assert_eq!(priority(&Value::from(-10), "inet"), Some(-10));
        assert_eq!(priority(&Value::from("filter - 10"), "inet"), Some(-10));
        assert_eq!(priority(&Value::from("raw"), "ip"), Some(-300));
        assert_eq!(priority(&Value::from("dstnat+5"), "ip6"), Some(-95));
        assert_eq!(priority(&Value::from("filter"), "bridge"), Some(-200));
        assert_eq!(priority(&Value::from("nonsense"), "inet"), None);
    }

    #[test]
    fn prefix_spans() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(prefix_span(a, 8), Some((0x0a00_0000, 0x0aff_ffff)));
        assert_eq!(prefix_span(a, 0), Some((0, u32::MAX.into())));
        assert_eq!(prefix_span(a, 33), None);
    }
}
