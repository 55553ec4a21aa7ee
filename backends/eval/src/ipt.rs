//! iptables semantics: `iptables-save` / `ip6tables-save` text plus `ipset save`, for
//! iptables-legacy and for the tables iptables-nft keeps (both print the same format).
//!
//! The packet ([`Packet`]) is a new TCP SYN or first UDP datagram from `src`, arriving on some
//! non-loopback interface, to a local unicast address, carrying no IPv6 extension header, no
//! fragment, mark 0. The built-in chains that see such a packet run in the kernel's order:
//!
//! | hook       | table    | priority | [`HookResult::priority`]      |
//! |------------|----------|----------|-------------------------------|
//! | PREROUTING | raw      | -300     | `PREROUTING_OFFSET - 300`     |
//! | PREROUTING | mangle   | -150     | `PREROUTING_OFFSET - 150`     |
//! | PREROUTING | nat      | -100     | `PREROUTING_OFFSET - 100`     |
//! | INPUT      | mangle   | -150     | -150                          |
//! | INPUT      | filter   | 0        | 0                             |
//! | INPUT      | security | 50       | 50                            |
//! | INPUT      | nat      | 100      | 100                           |
//!
//! The INPUT chains keep their real netfilter priority, so they sort among nftables base chains
//! on the input hook exactly as the kernel runs them; the PREROUTING chains, which run before
//! any input hook, get their real priority plus [`PREROUTING_OFFSET`] (below every `i32`), so
//! sorting by priority keeps the kernel's order. [`real_priority`] gives the priority back.
//!
//! State flows from chain to chain the way the kernel carries it: conntrack runs between raw
//! and mangle (before it, `--ctstate` sees `INVALID`; after `-j CT --notrack`, `UNTRACKED`;
//! afterwards `NEW`), and packet and connection marks set by `MARK` / `CONNMARK` are seen by
//! later `-m mark` / `-m connmark` matches.
//!
//! Modelled exactly: `-s` (prefix or contiguous mask), `-p` (names, numbers, `all`, `!`),
//! `-i lo` / `! -i lo` / `-i +`, `-f`, `-d` inside multicast (never a local unicast address),
//! `-m tcp|udp --dport`, `--syn`, `--tcp-flags` (masks without ECE/CWR), `-m multiport
//! --dports` (and `--ports` when the destination port is listed), `-m conntrack --ctstate`,
//! `-m state --state`, `-m set --match-set` (hash:ip with netmask, hash:net with nomatch,
//! bitmap:ip, hash:ip,port and hash:net,port with `src,dst`, list:set; `--return-nomatch`;
//! another family's set never matches), `-m iprange --src-range`, `-m addrtype --dst-type`
//! (IPv4 and IPv6 rules differ, as in the kernel), `-m pkttype`, `-m mark`, `-m connmark`,
//! `-m comment`, IPv6 `-m rt|frag|hbh|dst|ah` (false: no extension header); targets ACCEPT,
//! DROP, REJECT, RETURN, jumps, `-g`, policies, LOG and the other targets that only log or
//! mangle header fields nothing later matches, MARK, CONNMARK, `CT --notrack`, SNAT in nat
//! INPUT; the nat chains are skipped by an untracked packet.
//!
//! A rule whose match cannot be decided (`-m limit`, `-m recent`, `--sport`, a specific `-d`,
//! an interface name other than `lo`, any other match module or option) is followed both ways:
//! when the packet's fate is the same whether it matches or not (a `-m limit ... -j LOG`, a
//! jump to a chain that only logs), that fate stands; otherwise the chain's verdict is
//! [`Verdict::Unknown`] naming the match. A target not modelled (DNAT, REDIRECT, TPROXY,
//! NFQUEUE, SET, `CT` other than `--notrack`, ...) that may apply makes its chain unknown, and
//! every later chain too (it may have changed the packet they see). So does a table
//! `iptables-nft-save` declares incompatible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Evaluate, HookResult, Packet, Verdict, L4};

/// Added to the real netfilter priority of PREROUTING chains in [`HookResult::priority`], so
/// that they sort before every input-hook chain (whose priorities are `i32`).
pub const PREROUTING_OFFSET: i64 = -(1i64 << 32);

/// The real netfilter priority and hook of a [`HookResult::priority`] this module produced:
/// `("PREROUTING", -300)` for raw PREROUTING, `("INPUT", 0)` for filter INPUT.
pub fn real_priority(priority: i64) -> (&'static str, i64) {
    if priority < i64::from(i32::MIN) {
        ("PREROUTING", priority - PREROUTING_OFFSET)
    } else {
        ("INPUT", priority)
    }
}

/// The built-in chains a locally delivered packet traverses, in kernel order:
/// (table, chain, real priority, on the prerouting hook).
const HOOKS: [(&str, &str, i64, bool); 7] = [
    ("raw", "PREROUTING", -300, true),
    ("mangle", "PREROUTING", -150, true),
    ("nat", "PREROUTING", -100, true),
    ("mangle", "INPUT", -150, false),
    ("filter", "INPUT", 0, false),
    ("security", "INPUT", 50, false),
    ("nat", "INPUT", 100, false),
];

/// Rule visits one chain evaluation may make (following undecidable matches both ways
/// multiplies them); past it the verdict is unknown rather than slow.
const BUDGET: u32 = 200_000;

/// Undecidable matches followed both ways on one path at most (each is a recursion).
const FORK_DEPTH: u32 = 48;

/// Nested jumps followed at most (the kernel refuses loops; a damaged save may have one).
const JUMP_DEPTH: usize = 256;

/// Set nesting (`list:set` in `list:set`) followed at most.
const SET_DEPTH: u32 = 8;

/// A parsed iptables ruleset for both families, with the ipsets its rules may name.
#[derive(Debug, Clone)]
pub struct Ruleset {
    label: String,
    v4: Family,
    v6: Family,
    sets: BTreeMap<String, IpSet>,
}

#[derive(Debug, Clone, Default)]
struct Family {
    tables: BTreeMap<String, Table>,
    /// Tables `iptables-nft-save` could not print (`# Table `x' is incompatible`), with the
    /// comment it printed instead.
    incompatible: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Table {
    chains: BTreeMap<String, Chain>,
}

#[derive(Debug, Clone)]
struct Chain {
    /// `ACCEPT` / `DROP` for built-in chains, `-` for user chains.
    policy: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// The `-A` line as printed, without a leading `[packets:bytes]`.
    text: String,
    conds: Vec<Cond>,
    target: Target,
}

/// One condition of a rule; all must hold for the rule to match.
#[derive(Debug, Clone)]
enum Cond {
    /// Decided without looking at the packet (`-i lo`: false, `-m rt` on IPv6: false).
    Fixed(bool),
    /// Cannot be decided: what it is.
    Maybe(String),
    Src {
        net: Net,
        neg: bool,
    },
    SrcRange {
        lo: u128,
        hi: u128,
        neg: bool,
    },
    /// `-p`: `None` is `all`.
    Proto {
        proto: Option<u8>,
        neg: bool,
    },
    /// A `-m tcp` / `-m udp` option: false for the other protocol.
    L4Is(L4),
    Dport {
        ranges: Vec<(u16, u16)>,
        neg: bool,
    },
    /// multiport `--ports`: source or destination port.
    EitherPort {
        ranges: Vec<(u16, u16)>,
        neg: bool,
        text: String,
    },
    TcpFlags {
        mask: u8,
        comp: u8,
        neg: bool,
    },
    /// `--ctstate` / `--state`: which of the states our packet can have are listed.
    State {
        invalid: bool,
        new: bool,
        untracked: bool,
        neg: bool,
    },
    Mark {
        value: u32,
        mask: u32,
        neg: bool,
    },
    ConnMark {
        value: u32,
        mask: u32,
        neg: bool,
    },
    Set {
        name: String,
        flags: Vec<Dir>,
        neg: bool,
        return_nomatch: bool,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
}

#[derive(Debug, Clone)]
enum Target {
    /// No `-j`: the rule only counts.
    None,
    Accept,
    Drop,
    Reject,
    Return,
    Jump(String),
    Goto(String),
    /// Cannot change the verdict or anything a later rule looks at (LOG, NFLOG, ...).
    Continue,
    /// `-j CT --notrack` / `-j NOTRACK`.
    NoTrack,
    /// MARK: mark = (mark & !mask) ^ value.
    Mark {
        value: u32,
        mask: u32,
    },
    /// CONNMARK on the connection mark: ctmark = (ctmark & !mask) ^ value.
    CtMarkSet {
        value: u32,
        mask: u32,
    },
    /// CONNMARK --save-mark: ctmark = (ctmark & !ctmask) ^ (mark & nfmask).
    CtMarkSave {
        nfmask: u32,
        ctmask: u32,
    },
    /// CONNMARK --restore-mark: mark = (mark & !nfmask) ^ (ctmark & ctmask).
    CtMarkRestore {
        nfmask: u32,
        ctmask: u32,
    },
    /// SNAT / MASQUERADE: in nat INPUT, ends the chain and lets the packet through.
    Snat(String),
    /// Anything else (DNAT, REDIRECT, TPROXY, NFQUEUE, SET, ...): may change the packet or
    /// decide it in ways not modelled.
    Unknown(String),
}

impl Target {
    /// Cannot change the verdict or any state later rules look at.
    fn is_inert(&self) -> bool {
        matches!(self, Target::None | Target::Continue)
    }
}

/// A network: `addr` is the first address, `len` the prefix length, in a family of `width`
/// bits (32 or 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Net {
    addr: u128,
    len: u8,
}

fn mask_of(len: u8, width: u8) -> u128 {
    let all = all_ones(width);
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

fn all_ones(width: u8) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

impl Net {
    fn new(addr: u128, len: u8, width: u8) -> Net {
        Net {
            addr: addr & mask_of(len, width),
            len,
        }
    }

    fn contains(&self, a: u128, width: u8) -> bool {
        a & mask_of(self.len, width) == self.addr
    }

    fn last(&self, width: u8) -> u128 {
        self.addr | (all_ones(width) & !mask_of(self.len, width))
    }
}

fn width(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn bits_addr(b: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(b as u32))
    }
}

fn parse_ip(s: &str, v6: bool) -> Option<u128> {
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(u128::from)
    } else {
        s.parse::<Ipv4Addr>().ok().map(|a| u128::from(u32::from(a)))
    }
}

/// `addr`, `addr/len` or `addr/dotted-mask` (contiguous only).
fn parse_net(s: &str, v6: bool) -> Result<Net, String> {
    let w = width(v6);
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let addr = parse_ip(a, v6)
        .ok_or_else(|| format!("`{s}` is not an IPv{} address", if v6 { 6 } else { 4 }))?;
    let len = match m {
        None => w,
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
            match m.parse::<u8>() {
                Ok(l) if l <= w => l,
                _ => return Err(format!("`{s}` has a bad prefix length")),
            }
        }
        Some(m) => {
            let mask = parse_ip(m, v6).ok_or_else(|| format!("`{s}` has a bad mask"))?;
            let len = mask.count_ones() as u8;
            if mask != mask_of(len, w) {
                return Err(format!("`{s}` has a non-contiguous mask"));
            }
            len
        }
    };
    Ok(Net::new(addr, len, w))
}

/// What a condition or a rule's match comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Maybe(String),
}

fn tri(b: bool) -> Tri {
    if b {
        Tri::Yes
    } else {
        Tri::No
    }
}

fn negate(t: Tri, neg: bool) -> Tri {
    match (t, neg) {
        (Tri::Yes, true) => Tri::No,
        (Tri::No, true) => Tri::Yes,
        (t, _) => t,
    }
}

/// The per-packet state later rules can look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ctx {
    untracked: bool,
    mark: u32,
    ctmark: u32,
}

/// What a chain's evaluation leaves for the next chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    /// The state (`None`: it depends on a rule that could not be decided).
    Ctx(Option<Ctx>),
    /// The packet itself may have been changed in a way not modelled (a DNAT): what did it.
    Tainted(String),
}

fn merge_after(a: &After, b: &After) -> After {
    match (a, b) {
        (After::Tainted(w), _) | (_, After::Tainted(w)) => After::Tainted(w.clone()),
        (After::Ctx(Some(x)), After::Ctx(Some(y))) if x == y => After::Ctx(Some(*x)),
        _ => After::Ctx(None),
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    verdict: Verdict,
    rule: Option<String>,
    after: After,
}

/// Where evaluation stands: the chain and rule index, the return stack, the packet state.
#[derive(Debug, Clone)]
struct State<'a> {
    chain: &'a str,
    idx: usize,
    stack: Vec<(&'a str, usize)>,
    ctx: Option<Ctx>,
}

/// What the evaluation of one chain needs to know besides the rules.
struct Env<'a> {
    table: &'a Table,
    table_name: &'a str,
    builtin: &'a str,
    prerouting_raw: bool,
    pkt: &'a Packet,
    v6: bool,
    sets: &'a BTreeMap<String, IpSet>,
}

impl Ruleset {
    /// Parses `iptables-save` and `ip6tables-save` output (either may be empty: that family
    /// has no tables) and `ipset save` output (may be empty). `label` names the variant in
    /// every [`HookResult::chain`]: `iptables-legacy` or `iptables-nft` (for IPv6 results its
    /// leading `iptables` reads `ip6tables`, the tool an operator would run).
    ///
    /// Structural damage (a rule outside a table, a table without `COMMIT`, a rule for an
    /// undeclared chain, an unreadable line) is an error naming the line; matches and targets
    /// the evaluator does not model are not errors: they make verdicts unknown where they
    /// could matter.
    pub fn parse(
        label: &str,
        v4_save: &str,
        v6_save: &str,
        ipset_save: &str,
    ) -> Result<Ruleset, String> {
        let v4 = parse_save(v4_save, false).map_err(|e| format!("{label} iptables-save: {e}"))?;
        let v6 = parse_save(v6_save, true).map_err(|e| format!("{label} ip6tables-save: {e}"))?;
        let sets = parse_ipset(ipset_save).map_err(|e| format!("ipset save: {e}"))?;
        Ok(Ruleset {
            label: label.to_string(),
            v4,
            v6,
            sets,
        })
    }

    fn family(&self, v6: bool) -> &Family {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn chain_name(&self, v6: bool, table: &str, chain: &str) -> String {
        let label = match (v6, self.label.strip_prefix("iptables")) {
            (true, Some(rest)) => format!("ip6tables{rest}"),
            _ => self.label.clone(),
        };
        format!("{label} {table} {chain}")
    }
}

impl Evaluate for Ruleset {
    fn evaluate(&self, packet: &Packet) -> Vec<HookResult> {
        let v6 = packet.src.is_ipv6();
        let fam = self.family(v6);
        let mut after = After::Ctx(Some(Ctx {
            untracked: false,
            mark: 0,
            ctmark: 0,
        }));
        let mut out = Vec::new();
        for (tname, cname, prio, pre) in HOOKS {
            let priority = if pre { PREROUTING_OFFSET + prio } else { prio };
            let chain = self.chain_name(v6, tname, cname);
            if let Some(comment) = fam.incompatible.get(tname) {
                out.push(HookResult {
                    chain,
                    priority,
                    verdict: Verdict::Unknown(format!("{} printed `{comment}`", save_tool(v6))),
                    rule: None,
                });
                after = After::Tainted(format!("{tname} could not be read"));
                continue;
            }
            let Some(table) = fam.tables.get(tname) else {
                continue;
            };
            if !table.chains.contains_key(cname) {
                continue;
            }
            let ctx = match &after {
                After::Tainted(why) => {
                    out.push(HookResult {
                        chain,
                        priority,
                        verdict: Verdict::Unknown(format!(
                            "the packet this chain sees depends on {why}"
                        )),
                        rule: None,
                    });
                    continue;
                }
                After::Ctx(c) => *c,
            };
            // NAT only sees packets with a connection: an untracked one passes it untouched.
            if tname == "nat" && ctx.is_some_and(|c| c.untracked) {
                out.push(HookResult {
                    chain,
                    priority,
                    verdict: Verdict::Accept,
                    rule: None,
                });
                continue;
            }
            let env = Env {
                table,
                table_name: tname,
                builtin: cname,
                prerouting_raw: tname == "raw",
                pkt: packet,
                v6,
                sets: &self.sets,
            };
            let state = State {
                chain: cname,
                idx: 0,
                stack: Vec::new(),
                ctx,
            };
            let mut budget = BUDGET;
            let mut o = env.run(state, &mut budget, 0);
            // Whether the packet is tracked (and so seen by nat) depended on an undecidable
            // rule: an untracked packet would have passed untouched.
            if tname == "nat"
                && ctx.is_none()
                && !matches!(o.verdict, Verdict::Accept | Verdict::Unknown(_))
            {
                o.verdict = Verdict::Unknown(format!(
                    "{} (if the packet is tracked; an undecidable rule chose)",
                    o.verdict
                ));
            }
            if !o.verdict.is_refusal() {
                after = match o.after {
                    After::Tainted(why) => After::Tainted(format!("{why} in {chain}")),
                    a => a,
                };
            }
            out.push(HookResult {
                chain,
                priority,
                verdict: o.verdict,
                rule: o.rule,
            });
        }
        out
    }

    fn boundaries(&self, v6: bool) -> Vec<IpAddr> {
        let w = width(v6);
        let top = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let mut points = BTreeSet::new();
        let mut add = |first: u128, last: u128| {
            points.insert(first);
            if last < top {
                points.insert(last + 1);
            }
        };
        for table in self.family(v6).tables.values() {
            for chain in table.chains.values() {
                for rule in &chain.rules {
                    for c in &rule.conds {
                        match c {
                            Cond::Src { net, .. } => add(net.addr, net.last(w)),
                            Cond::SrcRange { lo, hi, .. } => add(*lo, *hi),
                            _ => {}
                        }
                    }
                }
            }
        }
        for set in self.sets.values() {
            if set.v6 != v6 {
                continue;
            }
            if let SetKind::Addrs { elems, .. } = &set.kind {
                for (net, _) in elems.keys() {
                    add(net.addr, net.last(w));
                }
            }
        }
        points.into_iter().map(|b| bits_addr(b, v6)).collect()
    }
}

fn save_tool(v6: bool) -> &'static str {
    if v6 {
        "ip6tables-save"
    } else {
        "iptables-save"
    }
}

impl Env<'_> {
    /// Whether the packet has a connection (CONNMARK and `-m connmark` need one): not in raw,
    /// which runs before conntrack, and not once `--notrack` made it untracked.
    fn has_ct(&self, ctx: &Ctx) -> bool {
        !self.prerouting_raw && !ctx.untracked
    }

    fn policy(&self) -> Outcome {
        let policy = self
            .table
            .chains
            .get(self.builtin)
            .map_or("-", |c| c.policy.as_str());
        let rule = Some(format!("-P {} {policy}", self.builtin));
        let verdict = match policy {
            "ACCEPT" => Verdict::Accept,
            "DROP" => Verdict::Drop,
            other => Verdict::Unknown(format!("chain policy `{other}`")),
        };
        Outcome {
            verdict,
            rule,
            after: After::Ctx(None),
        }
    }

    fn run<'a>(&'a self, mut s: State<'a>, budget: &mut u32, forks: u32) -> Outcome {
        loop {
            if *budget == 0 {
                return Outcome {
                    verdict: Verdict::Unknown(format!(
                        "more than {BUDGET} rule visits (undecidable matches followed both ways)"
                    )),
                    rule: None,
                    after: After::Tainted("a chain too large to follow".into()),
                };
            }
            *budget -= 1;
            let Some(chain) = self.table.chains.get(s.chain) else {
                return unknown_tainted(format!("chain `{}` does not exist", s.chain), None);
            };
            let Some(rule) = chain.rules.get(s.idx) else {
                // The end of a chain returns to the caller; of the built-in chain, the policy.
                match s.stack.pop() {
                    Some((c, i)) => {
                        s.chain = c;
                        s.idx = i;
                        continue;
                    }
                    None => return self.with_ctx(self.policy(), s.ctx),
                }
            };
            match self.matches(rule, s.ctx.as_ref()) {
                Tri::No => s.idx += 1,
                Tri::Yes => {
                    if let Some(o) = self.apply(rule, &mut s) {
                        return o;
                    }
                }
                Tri::Maybe(why) => {
                    if rule.target.is_inert() {
                        s.idx += 1;
                        continue;
                    }
                    if forks >= FORK_DEPTH {
                        return unknown_tainted(
                            format!("more than {FORK_DEPTH} undecidable matches on one path"),
                            Some(rule.text.clone()),
                        );
                    }
                    // Follow both ways: the rule matched, or it did not.
                    let mut m = s.clone();
                    let a = match self.apply(rule, &mut m) {
                        Some(o) => o,
                        None => self.run(m, budget, forks + 1),
                    };
                    s.idx += 1;
                    let b = self.run(s, budget, forks + 1);
                    return merge(a, b, &why, &rule.text);
                }
            }
        }
    }

    fn with_ctx(&self, mut o: Outcome, ctx: Option<Ctx>) -> Outcome {
        if let After::Ctx(_) = o.after {
            o.after = After::Ctx(ctx);
        }
        o
    }

    /// Applies a matched rule's target: `Some` when it ends this chain's evaluation.
    fn apply<'a>(&'a self, rule: &'a Rule, s: &mut State<'a>) -> Option<Outcome> {
        let end = |verdict: Verdict, ctx: Option<Ctx>| {
            Some(Outcome {
                verdict,
                rule: Some(rule.text.clone()),
                after: After::Ctx(ctx),
            })
        };
        match &rule.target {
            Target::None | Target::Continue => s.idx += 1,
            Target::Accept => return end(Verdict::Accept, s.ctx),
            Target::Drop => return end(Verdict::Drop, s.ctx),
            Target::Reject => return end(Verdict::Reject, s.ctx),
            Target::Return => match s.stack.pop() {
                Some((c, i)) => {
                    s.chain = c;
                    s.idx = i;
                }
                None => return Some(self.with_ctx(self.policy(), s.ctx)),
            },
            Target::Jump(c) => {
                if s.stack.len() >= JUMP_DEPTH {
                    return Some(unknown_tainted(
                        format!("jumps nested deeper than {JUMP_DEPTH} (a loop?)"),
                        Some(rule.text.clone()),
                    ));
                }
                s.stack.push((s.chain, s.idx + 1));
                s.chain = c;
                s.idx = 0;
            }
            Target::Goto(c) => {
                s.chain = c;
                s.idx = 0;
            }
            Target::NoTrack => {
                if !self.prerouting_raw {
                    return Some(unknown_tainted(
                        format!(
                            "`-j CT --notrack` outside the raw table ({})",
                            self.table_name
                        ),
                        Some(rule.text.clone()),
                    ));
                }
                if let Some(c) = s.ctx.as_mut() {
                    c.untracked = true;
                }
                s.idx += 1;
            }
            Target::Mark { value, mask } => {
                if let Some(c) = s.ctx.as_mut() {
                    c.mark = (c.mark & !mask) ^ value;
                }
                s.idx += 1;
            }
            Target::CtMarkSet { value, mask } => {
                if let Some(c) = s.ctx.as_mut() {
                    if self.has_ct(c) {
                        c.ctmark = (c.ctmark & !mask) ^ value;
                    }
                }
                s.idx += 1;
            }
            Target::CtMarkSave { nfmask, ctmask } => {
                if let Some(c) = s.ctx.as_mut() {
                    if self.has_ct(c) {
                        c.ctmark = (c.ctmark & !ctmask) ^ (c.mark & nfmask);
                    }
                }
                s.idx += 1;
            }
            Target::CtMarkRestore { nfmask, ctmask } => {
                if let Some(c) = s.ctx.as_mut() {
                    if self.has_ct(c) {
                        c.mark = (c.mark & !nfmask) ^ (c.ctmark & ctmask);
                    }
                }
                s.idx += 1;
            }
            Target::Snat(what) => {
                // SNAT in nat INPUT runs after every filter on the input hook and only
                // rewrites the source: the packet is delivered.
                if self.table_name == "nat" && self.builtin == "INPUT" {
                    return end(Verdict::Accept, s.ctx);
                }
                return Some(unknown_tainted(what.clone(), Some(rule.text.clone())));
            }
            Target::Unknown(what) => {
                return Some(unknown_tainted(what.clone(), Some(rule.text.clone())));
            }
        }
        None
    }

    fn matches(&self, rule: &Rule, ctx: Option<&Ctx>) -> Tri {
        let mut maybe = None;
        for c in &rule.conds {
            match self.cond(c, ctx) {
                Tri::No => return Tri::No,
                Tri::Yes => {}
                Tri::Maybe(w) => {
                    maybe.get_or_insert(w);
                }
            }
        }
        match maybe {
            Some(w) => Tri::Maybe(w),
            None => Tri::Yes,
        }
    }

    fn cond(&self, c: &Cond, ctx: Option<&Ctx>) -> Tri {
        let w = width(self.v6);
        let src = addr_bits(self.pkt.src);
        let uncertain =
            || Tri::Maybe("a mark or conntrack state set by an undecidable rule".into());
        match c {
            Cond::Fixed(b) => tri(*b),
            Cond::Maybe(w) => Tri::Maybe(w.clone()),
            Cond::Src { net, neg } => negate(tri(net.contains(src, w)), *neg),
            Cond::SrcRange { lo, hi, neg } => negate(tri(*lo <= src && src <= *hi), *neg),
            Cond::Proto { proto, neg } => negate(
                tri(proto.is_none_or(|p| p == self.pkt.proto.number())),
                *neg,
            ),
            Cond::L4Is(l4) => tri(*l4 == self.pkt.proto),
            Cond::Dport { ranges, neg } => negate(tri(in_ranges(ranges, self.pkt.dport)), *neg),
            Cond::EitherPort { ranges, neg, text } => {
                if in_ranges(ranges, self.pkt.dport) {
                    negate(Tri::Yes, *neg)
                } else {
                    Tri::Maybe(text.clone())
                }
            }
            Cond::TcpFlags { mask, comp, neg } => {
                if self.pkt.proto != L4::Tcp {
                    return Tri::No;
                }
                negate(tri(SYN & mask == *comp), *neg)
            }
            Cond::State {
                invalid,
                new,
                untracked,
                neg,
            } => {
                let Some(ctx) = ctx else {
                    return uncertain();
                };
                let listed = if ctx.untracked {
                    *untracked
                } else if self.prerouting_raw {
                    *invalid
                } else {
                    *new
                };
                negate(tri(listed), *neg)
            }
            Cond::Mark { value, mask, neg } => {
                let Some(ctx) = ctx else {
                    return uncertain();
                };
                negate(tri(ctx.mark & mask == *value), *neg)
            }
            Cond::ConnMark { value, mask, neg } => {
                let Some(ctx) = ctx else {
                    return uncertain();
                };
                // Without a connection the match fails, inverted or not.
                if !self.has_ct(ctx) {
                    return Tri::No;
                }
                negate(tri(ctx.ctmark & mask == *value), *neg)
            }
            Cond::Set {
                name,
                flags,
                neg,
                return_nomatch,
                text,
            } => negate(
                set_test(
                    self.sets,
                    name,
                    flags,
                    *return_nomatch,
                    self.pkt,
                    self.v6,
                    text,
                    0,
                ),
                *neg,
            ),
        }
    }
}

const SYN: u8 = 0x02;

fn in_ranges(ranges: &[(u16, u16)], p: u16) -> bool {
    ranges.iter().any(|&(a, b)| a <= p && p <= b)
}

fn unknown_tainted(what: String, rule: Option<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Unknown(what.clone()),
        rule,
        after: After::Tainted(what),
    }
}

/// Two ways one undecidable rule could go: `a` if it matched, `b` if not.
fn merge(a: Outcome, b: Outcome, why: &str, rule: &str) -> Outcome {
    let live: Vec<&After> = [&a, &b]
        .into_iter()
        .filter(|o| !o.verdict.is_refusal())
        .map(|o| &o.after)
        .collect();
    let after = match live.as_slice() {
        [] => After::Ctx(None),
        [x] => (*x).clone(),
        [x, y, ..] => merge_after(x, y),
    };
    // The same answer both ways (the same unknown included: this rule did not matter, a later
    // one does): that answer, with the rule of the way where this rule did not match.
    if a.verdict == b.verdict {
        return Outcome {
            verdict: b.verdict,
            rule: b.rule,
            after,
        };
    }
    let what = if a.verdict.is_refusal() && b.verdict.is_refusal() {
        format!("dropped or rejected, depending on {why}")
    } else {
        why.to_string()
    };
    Outcome {
        verdict: Verdict::Unknown(what),
        rule: Some(rule.to_string()),
        after,
    }
}

// ---------------------------------------------------------------------------------------------
// ipsets

#[derive(Debug, Clone)]
struct IpSet {
    v6: bool,
    kind: SetKind,
}

#[derive(Debug, Clone)]
enum SetKind {
    /// hash:ip, hash:net, bitmap:ip (dims 1) and hash:ip,port, hash:net,port (dims 2): the
    /// elements by (network, (protocol, port)), each with its `nomatch` flag, and the prefix
    /// lengths present, longest first (the kernel tries the most specific first).
    Addrs {
        dims: usize,
        /// hash:net and hash:net,port: types that can hold nomatch elements.
        nomatch_types: bool,
        elems: HashMap<(Net, Option<(u8, u16)>), bool>,
        lens: Vec<u8>,
    },
    List(Vec<String>),
    Unsupported(String),
}

#[allow(clippy::too_many_arguments)]
fn set_test(
    sets: &BTreeMap<String, IpSet>,
    name: &str,
    flags: &[Dir],
    return_nomatch: bool,
    pkt: &Packet,
    v6: bool,
    text: &str,
    depth: u32,
) -> Tri {
    let Some(set) = sets.get(name) else {
        return Tri::Maybe(format!("{text} (set `{name}` is not in `ipset save`)"));
    };
    if depth > SET_DEPTH {
        return Tri::Maybe(format!("{text} (sets nested too deep)"));
    }
    match &set.kind {
        SetKind::Unsupported(why) => Tri::Maybe(format!("{text} ({why})")),
        SetKind::List(members) => {
            let mut maybe = None;
            for m in members {
                match set_test(sets, m, flags, return_nomatch, pkt, v6, text, depth + 1) {
                    Tri::Yes => return Tri::Yes,
                    Tri::No => {}
                    Tri::Maybe(w) => {
                        maybe.get_or_insert(w);
                    }
                }
            }
            maybe.map_or(Tri::No, Tri::Maybe)
        }
        SetKind::Addrs {
            dims,
            nomatch_types,
            elems,
            lens,
        } => {
            // The kernel does not match a set of the other family, nor with fewer
            // directions than the set has dimensions.
            if set.v6 != v6 || flags.len() < *dims {
                return Tri::No;
            }
            if flags[0] != Dir::Src {
                return Tri::Maybe(format!("{text} (matches the destination address)"));
            }
            let port = if *dims == 2 {
                if flags[1] != Dir::Dst {
                    return Tri::Maybe(format!("{text} (matches the source port)"));
                }
                Some((pkt.proto.number(), pkt.dport))
            } else {
                None
            };
            let w = width(v6);
            let src = addr_bits(pkt.src);
            for &len in lens {
                if let Some(&nomatch) = elems.get(&(Net::new(src, len, w), port)) {
                    // ip_set_test: `--return-nomatch` inverts the element's answer (a matching
                    // element no longer matches, a nomatch one does) in the set types that
                    // have nomatch elements.
                    return tri(if return_nomatch && *nomatch_types {
                        nomatch
                    } else {
                        !nomatch
                    });
                }
            }
            Tri::No
        }
    }
}

fn parse_ipset(text: &str) -> Result<BTreeMap<String, IpSet>, String> {
    struct Building {
        v6: bool,
        kind: Result<(usize, bool, u8), String>, // (dims, nets allowed, netmask)
        elems: HashMap<(Net, Option<(u8, u16)>), bool>,
        members: Vec<String>,
        list: bool,
        bad: Option<String>,
    }
    let mut sets: BTreeMap<String, Building> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let toks = tokenize(line).map_err(|e| format!("line {n}: {e}"))?;
        let words: Vec<&str> = toks.iter().map(|t| t.s.as_str()).collect();
        match words.as_slice() {
            ["create", name, kind, opts @ ..] => {
                let v6 = opts.windows(2).any(|w| w[0] == "family" && w[1] == "inet6");
                let w = width(v6);
                let netmask = match opts.windows(2).find(|w| w[0] == "netmask") {
                    Some(pair) => match pair[1].parse::<u8>() {
                        Ok(m) if (1..=w).contains(&m) => m,
                        _ => {
                            return Err(format!("line {n}: set `{name}` has netmask `{}`", pair[1]))
                        }
                    },
                    None => w,
                };
                let is_list = *kind == "list:set";
                let kind = match *kind {
                    _ if opts.contains(&"bitmask") => Err(format!("set `{name}` uses a bitmask")),
                    "hash:ip" | "bitmap:ip" => Ok((1, false, netmask)),
                    "hash:net" => Ok((1, true, w)),
                    "hash:ip,port" => Ok((2, false, w)),
                    "hash:net,port" => Ok((2, true, w)),
                    "list:set" => Ok((0, false, w)),
                    other => Err(format!("set `{name}` has type {other}, not modelled")),
                };
                let b = Building {
                    v6,
                    list: is_list,
                    kind,
                    elems: HashMap::new(),
                    members: Vec::new(),
                    bad: None,
                };
                if sets.insert(name.to_string(), b).is_some() {
                    return Err(format!("line {n}: set `{name}` is created twice"));
                }
            }
            ["add", name, elem, opts @ ..] => {
                let Some(b) = sets.get_mut(*name) else {
                    return Err(format!(
                        "line {n}: `add` to set `{name}` before its `create`"
                    ));
                };
                if b.list {
                    b.members.push(elem.to_string());
                    continue;
                }
                let Ok((dims, nets, netmask)) = b.kind.clone() else {
                    continue;
                };
                let nomatch = opts.contains(&"nomatch");
                match parse_elem(elem, b.v6, dims, nets, netmask) {
                    Ok(key) => {
                        b.elems.insert(key, nomatch);
                    }
                    Err(e) => {
                        b.bad
                            .get_or_insert(format!("set `{name}` element `{elem}`: {e}"));
                    }
                }
            }
            _ => return Err(format!("line {n}: not an `ipset save` line: `{line}`")),
        }
    }
    Ok(sets
        .into_iter()
        .map(|(name, b)| {
            let kind = if b.list {
                SetKind::List(b.members)
            } else {
                match (b.kind, b.bad) {
                    (Err(e), _) | (Ok(_), Some(e)) => SetKind::Unsupported(e),
                    (Ok((dims, nets, _)), None) => {
                        let lens: BTreeSet<u8> = b.elems.keys().map(|(net, _)| net.len).collect();
                        SetKind::Addrs {
                            dims,
                            nomatch_types: nets,
                            elems: b.elems,
                            lens: lens.into_iter().rev().collect(),
                        }
                    }
                }
            };
            (name, IpSet { v6: b.v6, kind })
        })
        .collect())
}

fn parse_elem(
    elem: &str,
    v6: bool,
    dims: usize,
    nets: bool,
    netmask: u8,
) -> Result<(Net, Option<(u8, u16)>), String> {
    let w = width(v6);
    let (addr, port) = if dims == 2 {
        let (a, p) = elem.split_once(',').ok_or("no port")?;
        (a, Some(p))
    } else {
        (elem, None)
    };
    let net = if nets {
        parse_net(addr, v6)?
    } else {
        let a = parse_ip(addr, v6).ok_or("not an address")?;
        Net::new(a, netmask, w)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let (proto, num) = match p.split_once(':') {
                Some((proto, num)) => (proto_number(proto).ok_or("unknown protocol")?, num),
                None => (6, p),
            };
            let num: u16 = if proto == 6 || proto == 17 {
                num.parse().map_err(|_| "bad port")?
            } else {
                // Other protocols (icmp types, ...) never meet a TCP or UDP packet.
                0
            };
            Some((proto, num))
        }
    };
    Ok((net, port))
}

// ---------------------------------------------------------------------------------------------
// *-save text

#[derive(Debug, Clone)]
struct Tok {
    s: String,
    quoted: bool,
}

/// Splits a line the way iptables-restore does: whitespace separates, `"..."` groups, and
/// inside quotes `\` escapes the next character.
fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_quote = false;
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if in_quote {
            match c {
                '\\' => match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("a `\\` ends the line inside quotes".into()),
                },
                '"' => in_quote = false,
                c => cur.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                quoted = true;
                started = true;
            }
            c if c.is_whitespace() => {
                if started {
                    out.push(Tok {
                        s: std::mem::take(&mut cur),
                        quoted,
                    });
                    quoted = false;
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if in_quote {
        return Err("an unterminated quote".into());
    }
    if started {
        out.push(Tok { s: cur, quoted });
    }
    Ok(out)
}

fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

fn parse_save(text: &str, v6: bool) -> Result<Family, String> {
    let mut fam = Family::default();
    // The open table: its name, chains (name -> policy) in order, rule lines (line, tokens).
    struct Open {
        name: String,
        line: usize,
        chains: Vec<(String, String)>,
        rules: Vec<(usize, String, Vec<Tok>)>,
    }
    let mut open: Option<Open> = None;
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            // iptables-nft-save: "# Table `filter' is incompatible, use 'nft' tool."
            if let Some(rest) = comment.trim().strip_prefix("Table `") {
                if let Some((name, tail)) = rest.split_once('\'') {
                    if tail.contains("incompatible") {
                        fam.incompatible.insert(name.to_string(), line.to_string());
                    }
                }
            }
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some(o) = &open {
                return Err(format!(
                    "line {n}: table `{name}` starts before table `{}` (line {}) has its COMMIT",
                    o.name, o.line
                ));
            }
            if fam.tables.contains_key(name) {
                return Err(format!("line {n}: table `{name}` appears twice"));
            }
            open = Some(Open {
                name: name.to_string(),
                line: n,
                chains: Vec::new(),
                rules: Vec::new(),
            });
            continue;
        }
        let Some(o) = open.as_mut() else {
            return Err(format!(
                "line {n}: `{line}` outside a table (no `*table` before it)"
            ));
        };
        if line == "COMMIT" {
            let o = open.take().expect("open table");
            let table = build_table(&o.name, o.chains, o.rules, v6)?;
            fam.tables.insert(o.name, table);
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut it = decl.split_whitespace();
            let (Some(name), Some(policy)) = (it.next(), it.next()) else {
                return Err(format!(
                    "line {n}: chain declaration `{line}` has no policy"
                ));
            };
            if o.chains.iter().any(|(c, _)| c == name) {
                return Err(format!("line {n}: chain `{name}` is declared twice"));
            }
            o.chains.push((name.to_string(), policy.to_string()));
            continue;
        }
        let mut toks = tokenize(line).map_err(|e| format!("line {n}: {e}"))?;
        // `iptables-save -c` prefixes each rule with its counters.
        let mut text = line;
        if toks.first().is_some_and(|t| is_counters(&t.s)) {
            toks.remove(0);
            text = line.split_once(']').map_or(line, |(_, r)| r.trim_start());
        }
        match toks.first().map(|t| t.s.as_str()) {
            Some("-A" | "--append") => {}
            _ => return Err(format!("line {n}: not an iptables-save line: `{line}`")),
        }
        o.rules.push((n, text.to_string(), toks));
    }
    if let Some(o) = open {
        return Err(format!(
            "table `{}` (line {}) has no COMMIT: the output is cut short",
            o.name, o.line
        ));
    }
    Ok(fam)
}

fn is_counters(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

fn build_table(
    name: &str,
    decls: Vec<(String, String)>,
    rules: Vec<(usize, String, Vec<Tok>)>,
    v6: bool,
) -> Result<Table, String> {
    let builtins = builtin_chains(name);
    let names: BTreeSet<&str> = decls.iter().map(|(c, _)| c.as_str()).collect();
    let mut chains: BTreeMap<String, Chain> = decls
        .iter()
        .map(|(c, p)| {
            (
                c.clone(),
                Chain {
                    policy: if builtins.contains(&c.as_str()) {
                        p.clone()
                    } else {
                        "-".into()
                    },
                    rules: Vec::new(),
                },
            )
        })
        .collect();
    for (n, text, toks) in rules {
        let Some(chain) = toks.get(1).map(|t| t.s.clone()) else {
            return Err(format!("line {n}: `-A` without a chain"));
        };
        let rule =
            parse_rule(&toks[2..], text, v6, &names).map_err(|e| format!("line {n}: {e}"))?;
        match chains.get_mut(&chain) {
            Some(c) => c.rules.push(rule),
            None => {
                return Err(format!(
                    "line {n}: rule for chain `{chain}`, which table `{name}` does not declare"
                ))
            }
        }
    }
    Ok(Table { chains })
}

fn is_core_option(s: &str) -> bool {
    matches!(
        s,
        "-s" | "--source"
            | "--src"
            | "-d"
            | "--destination"
            | "--dst"
            | "-p"
            | "--protocol"
            | "-i"
            | "--in-interface"
            | "-o"
            | "--out-interface"
            | "-f"
            | "--fragment"
            | "-m"
            | "--match"
            | "-j"
            | "--jump"
            | "-g"
            | "--goto"
            | "-c"
            | "--set-counters"
            | "-4"
            | "--ipv4"
            | "-6"
            | "--ipv6"
    )
}

/// One option of a match or target: `[!] --name values...`.
#[derive(Debug, Clone)]
struct Opt {
    neg: bool,
    name: String,
    vals: Vec<String>,
}

impl Opt {
    fn text(&self) -> String {
        let mut s = String::new();
        if self.neg {
            s.push_str("! ");
        }
        s.push_str(&self.name);
        for v in &self.vals {
            s.push(' ');
            s.push_str(&quote(v));
        }
        s
    }
}

fn quote(v: &str) -> String {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"') {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

/// Reads options from `toks[*i..]` until a core option (`-m`, `-j`, `-s`, ...).
fn read_opts(toks: &[Tok], i: &mut usize) -> Vec<Opt> {
    let mut opts = Vec::new();
    loop {
        let mut j = *i;
        let neg = toks.get(j).is_some_and(|t| !t.quoted && t.s == "!");
        if neg {
            j += 1;
        }
        let Some(t) = toks.get(j) else { break };
        if t.quoted || !t.s.starts_with('-') || is_core_option(&t.s) {
            break;
        }
        let name = t.s.clone();
        j += 1;
        let mut vals = Vec::new();
        while let Some(v) = toks.get(j) {
            if !v.quoted
                && (v.s == "!" || (v.s.starts_with('-') && v.s.len() > 1 && !is_number(&v.s)))
            {
                break;
            }
            vals.push(v.s.clone());
            j += 1;
        }
        opts.push(Opt { neg, name, vals });
        *i = j;
    }
    opts
}

fn is_number(s: &str) -> bool {
    s.strip_prefix('-')
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_rule(
    toks: &[Tok],
    text: String,
    v6: bool,
    chains: &BTreeSet<&str>,
) -> Result<Rule, String> {
    let mut conds = Vec::new();
    let mut target = Target::None;
    let mut i = 0;
    let value = |i: usize, opt: &str| -> Result<String, String> {
        toks.get(i)
            .map(|t| t.s.clone())
            .ok_or_else(|| format!("`{opt}` without a value"))
    };
    while i < toks.len() {
        let mut neg = false;
        if !toks[i].quoted && toks[i].s == "!" {
            neg = true;
            i += 1;
        }
        let Some(t) = toks.get(i) else {
            return Err("a `!` ends the rule".into());
        };
        let opt = t.s.as_str();
        let bang = if neg { "! " } else { "" };
        match opt {
            "-s" | "--source" | "--src" => {
                let v = value(i + 1, opt)?;
                conds.push(match parse_net(&v, v6) {
                    Ok(net) => Cond::Src { net, neg },
                    Err(e) => Cond::Maybe(format!("{bang}-s {v} ({e})")),
                });
                i += 2;
            }
            "-d" | "--destination" | "--dst" => {
                let v = value(i + 1, opt)?;
                conds.push(dst_cond(&v, neg, v6));
                i += 2;
            }
            "-p" | "--protocol" => {
                let v = value(i + 1, opt)?;
                let lower = v.to_ascii_lowercase();
                conds.push(if lower == "all" || lower == "0" {
                    Cond::Proto { proto: None, neg }
                } else {
                    match proto_number(&lower) {
                        Some(p) => Cond::Proto {
                            proto: Some(p),
                            neg,
                        },
                        None => Cond::Maybe(format!("{bang}-p {v}")),
                    }
                });
                i += 2;
            }
            "-i" | "--in-interface" => {
                let v = value(i + 1, opt)?;
                conds.push(iface_cond(&v, neg));
                i += 2;
            }
            "-o" | "--out-interface" => {
                let v = value(i + 1, opt)?;
                conds.push(Cond::Maybe(format!("{bang}-o {v}")));
                i += 2;
            }
            "-f" | "--fragment" => {
                // The packet is not a fragment.
                conds.push(Cond::Fixed(neg));
                i += 1;
            }
            "-4" | "--ipv4" | "-6" | "--ipv6" => i += 1,
            "-c" | "--set-counters" => {
                i += 1;
                for _ in 0..2 {
                    if toks
                        .get(i)
                        .is_some_and(|t| t.s.bytes().all(|b| b.is_ascii_digit() || b == b','))
                    {
                        i += 1;
                    }
                }
            }
            "-m" | "--match" => {
                let name = value(i + 1, opt)?;
                i += 2;
                let opts = read_opts(toks, &mut i);
                match_conds(&name, &opts, v6, &mut conds);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let name = value(i + 1, opt)?;
                i += 2;
                let opts = read_opts(toks, &mut i);
                let goto = opt == "-g" || opt == "--goto";
                target = parse_target(&name, &opts, goto, chains);
            }
            other => {
                return Err(format!("unexpected `{other}`"));
            }
        }
    }
    Ok(Rule {
        text,
        conds,
        target,
    })
}

fn dst_cond(v: &str, neg: bool, v6: bool) -> Cond {
    let bang = if neg { "! " } else { "" };
    match parse_net(v, v6) {
        Ok(net) => {
            let w = width(v6);
            // A local unicast address is never multicast (nor the IPv4 broadcast address).
            let multicast = if v6 {
                Net::new(0xff << 120, 8, 128)
            } else {
                Net::new(0xe000_0000, 4, 32)
            };
            let inside_multicast = net.len >= multicast.len && multicast.contains(net.addr, w);
            let broadcast = !v6 && net.len == 32 && net.addr == u128::from(u32::MAX);
            if net.len == 0 {
                Cond::Fixed(!neg)
            } else if inside_multicast || broadcast {
                Cond::Fixed(neg)
            } else {
                Cond::Maybe(format!(
                    "{bang}-d {v} (the packet's local address is not known)"
                ))
            }
        }
        Err(e) => Cond::Maybe(format!("{bang}-d {v} ({e})")),
    }
}

fn iface_cond(v: &str, neg: bool) -> Cond {
    let bang = if neg { "! " } else { "" };
    let matched = if let Some(prefix) = v.strip_suffix('+') {
        if prefix.is_empty() {
            Some(true)
        } else {
            None
        }
    } else if v == "lo" {
        Some(false)
    } else {
        None
    };
    match matched {
        Some(m) => Cond::Fixed(m != neg),
        None => Cond::Maybe(format!(
            "{bang}-i {v} (the packet's interface is not known)"
        )),
    }
}

fn proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "igmp" => 2,
        "ipv6-icmp" | "icmpv6" | "icmp6" => 58,
        "esp" => 50,
        "ah" => 51,
        "gre" => 47,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "mh" | "ipv6-mh" => 135,
        "ipv6" => 41,
        "ipip" | "ipencap" => 4,
        "ospf" => 89,
        "vrrp" => 112,
        "pim" => 103,
        n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok()?,
        _ => return None,
    })
}

fn parse_ports(s: &str, list: bool) -> Option<Vec<(u16, u16)>> {
    let parts: Vec<&str> = if list {
        s.split(',').collect()
    } else {
        vec![s]
    };
    let mut out = Vec::new();
    for p in parts {
        let num = |x: &str, dflt: u16| -> Option<u16> {
            if x.is_empty() {
                Some(dflt)
            } else if x.bytes().all(|b| b.is_ascii_digit()) {
                x.parse().ok()
            } else {
                None
            }
        };
        match p.split_once(':') {
            Some((a, b)) => out.push((num(a, 0)?, num(b, u16::MAX)?)),
            None => {
                if p.is_empty() {
                    return None;
                }
                let n = num(p, 0)?;
                out.push((n, n));
            }
        }
    }
    Some(out)
}

fn tcp_flag_bits(s: &str) -> Option<u8> {
    let mut bits = 0u8;
    for f in s.split(',') {
        bits |= match f {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            "ALL" => 0xff,
            "NONE" => 0,
            _ => return None,
        };
    }
    Some(bits)
}

/// `strtoul(s, 0)`: hex with `0x`, octal with a leading `0`, decimal otherwise.
fn parse_u32(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// `value[/mask]`, the mask all ones when absent.
fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

fn match_conds(name: &str, opts: &[Opt], v6: bool, out: &mut Vec<Cond>) {
    let whole = || {
        let mut s = format!("-m {name}");
        for o in opts {
            s.push(' ');
            s.push_str(&o.text());
        }
        s
    };
    let one = |o: &Opt| format!("-m {name} {}", o.text());
    match name {
        "comment" => {}
        "tcp" | "udp" => {
            let l4 = if name == "tcp" { L4::Tcp } else { L4::Udp };
            out.push(Cond::L4Is(l4));
            for o in opts {
                let v0 = o.vals.first().map(String::as_str).unwrap_or("");
                match o.name.as_str() {
                    "--dport" | "--destination-port" if o.vals.len() == 1 => {
                        out.push(match parse_ports(v0, false) {
                            Some(ranges) => Cond::Dport { ranges, neg: o.neg },
                            None => Cond::Maybe(one(o)),
                        })
                    }
                    "--syn" if l4 == L4::Tcp && o.vals.is_empty() => out.push(Cond::TcpFlags {
                        mask: 0x17,
                        comp: SYN,
                        neg: o.neg,
                    }),
                    "--tcp-flags" if l4 == L4::Tcp && o.vals.len() == 2 => {
                        match (tcp_flag_bits(&o.vals[0]), tcp_flag_bits(&o.vals[1])) {
                            // A client may set ECE and CWR on its SYN (ECN): not known.
                            (Some(mask), Some(comp)) if mask & 0xc0 == 0 => {
                                out.push(Cond::TcpFlags {
                                    mask,
                                    comp,
                                    neg: o.neg,
                                })
                            }
                            _ => out.push(Cond::Maybe(one(o))),
                        }
                    }
                    _ => out.push(Cond::Maybe(one(o))),
                }
            }
        }
        "multiport" => {
            for o in opts {
                let list = o.vals.first().and_then(|v| parse_ports(v, true));
                match (o.name.as_str(), list) {
                    ("--dports" | "--destination-ports", Some(ranges)) if o.vals.len() == 1 => {
                        out.push(Cond::Dport { ranges, neg: o.neg })
                    }
                    ("--ports", Some(ranges)) if o.vals.len() == 1 => out.push(Cond::EitherPort {
                        ranges,
                        neg: o.neg,
                        text: one(o),
                    }),
                    _ => out.push(Cond::Maybe(one(o))),
                }
            }
        }
        "conntrack" | "state" => {
            let key = if name == "state" {
                "--state"
            } else {
                "--ctstate"
            };
            for o in opts {
                if o.name != key || o.vals.len() != 1 {
                    out.push(Cond::Maybe(one(o)));
                    continue;
                }
                let (mut invalid, mut new, mut untracked, mut ok) = (false, false, false, true);
                for s in o.vals[0].split(',') {
                    match s {
                        "INVALID" => invalid = true,
                        "NEW" => new = true,
                        "UNTRACKED" => untracked = true,
                        "ESTABLISHED" | "RELATED" => {}
                        "SNAT" | "DNAT" if name == "conntrack" => {}
                        _ => ok = false,
                    }
                }
                out.push(if ok {
                    Cond::State {
                        invalid,
                        new,
                        untracked,
                        neg: o.neg,
                    }
                } else {
                    Cond::Maybe(one(o))
                });
            }
        }
        "addrtype" => {
            for o in opts {
                match (o.name.as_str(), o.vals.as_slice()) {
                    ("--dst-type", [types]) => out.push(match dst_type(types, v6) {
                        Some(m) => Cond::Fixed(m != o.neg),
                        None => Cond::Maybe(one(o)),
                    }),
                    _ => out.push(Cond::Maybe(one(o))),
                }
            }
        }
        "set" => {
            let mut flags_at = None;
            let mut return_nomatch = false;
            let mut extra = Vec::new();
            for (k, o) in opts.iter().enumerate() {
                match o.name.as_str() {
                    "--match-set" | "--set" if o.vals.len() == 2 => flags_at = Some(k),
                    "--return-nomatch" if o.vals.is_empty() && !o.neg => return_nomatch = true,
                    // Counters only count.
                    "--update-counters" | "--update-subcounters" if o.vals.is_empty() => {}
                    _ => extra.push(one(o)),
                }
            }
            if let Some(e) = extra.into_iter().next() {
                out.push(Cond::Maybe(e));
            }
            let Some(k) = flags_at else {
                out.push(Cond::Maybe(whole()));
                return;
            };
            let o = &opts[k];
            let flags: Option<Vec<Dir>> = o.vals[1]
                .split(',')
                .map(|f| match f {
                    "src" => Some(Dir::Src),
                    "dst" => Some(Dir::Dst),
                    _ => None,
                })
                .collect();
            match flags {
                Some(flags) => out.push(Cond::Set {
                    name: o.vals[0].clone(),
                    flags,
                    neg: o.neg,
                    return_nomatch,
                    text: whole(),
                }),
                None => out.push(Cond::Maybe(whole())),
            }
        }
        "iprange" => {
            for o in opts {
                let range = o.vals.first().and_then(|v| {
                    let (a, b) = v.split_once('-')?;
                    Some((parse_ip(a, v6)?, parse_ip(b, v6)?))
                });
                match (o.name.as_str(), range) {
                    ("--src-range", Some((lo, hi))) if o.vals.len() == 1 => {
                        out.push(Cond::SrcRange { lo, hi, neg: o.neg })
                    }
                    _ => out.push(Cond::Maybe(one(o))),
                }
            }
        }
        "mark" | "connmark" => {
            for o in opts {
                let m = o.vals.first().and_then(|v| parse_mark(v));
                match (o.name.as_str(), m) {
                    ("--mark", Some((value, mask))) if o.vals.len() == 1 => {
                        out.push(if name == "mark" {
                            Cond::Mark {
                                value,
                                mask,
                                neg: o.neg,
                            }
                        } else {
                            Cond::ConnMark {
                                value,
                                mask,
                                neg: o.neg,
                            }
                        })
                    }
                    _ => out.push(Cond::Maybe(one(o))),
                }
            }
        }
        "pkttype" => {
            for o in opts {
                let m = match (o.name.as_str(), o.vals.as_slice()) {
                    ("--pkt-type", [t]) => match t.as_str() {
                        "unicast" | "host" => Some(true),
                        "broadcast" | "multicast" | "otherhost" | "outgoing" | "loopback" => {
                            Some(false)
                        }
                        _ => None,
                    },
                    _ => None,
                };
                out.push(match m {
                    Some(m) => Cond::Fixed(m != o.neg),
                    None => Cond::Maybe(one(o)),
                });
            }
        }
        // IPv6 extension headers: the packet carries none, and these matches fail without
        // their header, inverted options or not.
        "rt" | "frag" | "hbh" | "dst" | "ah" if v6 => out.push(Cond::Fixed(false)),
        _ => out.push(Cond::Maybe(whole())),
    }
}

/// `--dst-type` for a local unicast destination (`None` for a type list not modelled).
fn dst_type(types: &str, v6: bool) -> Option<bool> {
    let mut local = false;
    let mut unicast = false;
    let mut multicast = false;
    let mut unspec = false;
    let mut anycast_or_unreach = false;
    for t in types.split(',') {
        match t {
            "LOCAL" => local = true,
            "UNICAST" => unicast = true,
            "MULTICAST" => multicast = true,
            "UNSPEC" => unspec = true,
            "ANYCAST" | "UNREACHABLE" => anycast_or_unreach = true,
            "BROADCAST" | "BLACKHOLE" | "PROHIBIT" | "THROW" | "NAT" | "XRESOLVE" if !v6 => {}
            _ => return None,
        }
    }
    if !v6 {
        // IPv4: the address has exactly one type, RTN_LOCAL.
        return Some(local);
    }
    // IPv6 (xt_addrtype match_type6): every listed class must hold.
    let _ = unicast; // a local address is unicast
    if multicast || unspec {
        return Some(false);
    }
    if local || anycast_or_unreach {
        return Some(local);
    }
    Some(true)
}

fn parse_target(name: &str, opts: &[Opt], goto: bool, chains: &BTreeSet<&str>) -> Target {
    let text = || {
        let mut s = format!("-j {name}");
        for o in opts {
            s.push(' ');
            s.push_str(&o.text());
        }
        s
    };
    if chains.contains(name) {
        return if goto {
            Target::Goto(name.to_string())
        } else {
            Target::Jump(name.to_string())
        };
    }
    if goto {
        return Target::Unknown(format!("-g {name} (no such chain)"));
    }
    let opt = |n: &str| opts.iter().find(|o| o.name == n && !o.neg);
    let only = |allowed: &[&str]| {
        opts.iter()
            .all(|o| allowed.contains(&o.name.as_str()) && !o.neg)
    };
    match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "REJECT" => Target::Reject,
        "RETURN" => Target::Return,
        "LOG" | "NFLOG" | "ULOG" | "TRACE" | "AUDIT" | "CHECKSUM" | "TCPMSS" | "CLASSIFY"
        | "TOS" | "DSCP" | "TTL" | "HL" | "ECN" | "TEE" | "LED" => Target::Continue,
        "NOTRACK" => Target::NoTrack,
        "CT" if opts.len() == 1 && opt("--notrack").is_some_and(|o| o.vals.is_empty()) => {
            Target::NoTrack
        }
        "MARK" => {
            let mark = opts.first().and_then(|o| {
                if opts.len() != 1 || o.neg || o.vals.len() != 1 {
                    return None;
                }
                let (v, m) = parse_mark(&o.vals[0])?;
                let has_mask = o.vals[0].contains('/');
                Some(match o.name.as_str() {
                    "--set-xmark" => (v, m),
                    "--set-mark" => (v, if has_mask { m | v } else { u32::MAX }),
                    "--and-mark" if !has_mask => (0, !v),
                    "--or-mark" if !has_mask => (v, v),
                    "--xor-mark" if !has_mask => (v, 0),
                    _ => return None,
                })
            });
            match mark {
                Some((value, mask)) => Target::Mark { value, mask },
                None => Target::Unknown(text()),
            }
        }
        "CONNMARK" => {
            let masks = |dflt: u32| -> Option<(u32, u32)> {
                let get = |n: &str| match opt(n) {
                    Some(o) if o.vals.len() == 1 => parse_u32(&o.vals[0]),
                    Some(_) => None,
                    None => Some(dflt),
                };
                Some((get("--nfmask")?, get("--ctmask")?))
            };
            let t = if opt("--set-xmark").is_some() && opts.len() == 1 {
                opt("--set-xmark")
                    .and_then(|o| {
                        (o.vals.len() == 1)
                            .then(|| parse_mark(&o.vals[0]))
                            .flatten()
                    })
                    .map(|(value, mask)| Target::CtMarkSet { value, mask })
            } else if opt("--set-mark").is_some() && opts.len() == 1 {
                opt("--set-mark").and_then(|o| {
                    let (v, m) = parse_mark(o.vals.first()?)?;
                    let mask = if o.vals[0].contains('/') {
                        m | v
                    } else {
                        u32::MAX
                    };
                    (o.vals.len() == 1).then_some(Target::CtMarkSet { value: v, mask })
                })
            } else if opt("--save-mark").is_some_and(|o| o.vals.is_empty())
                && only(&["--save-mark", "--nfmask", "--ctmask", "--mask"])
            {
                let m = opt("--mask").and_then(|o| o.vals.first().and_then(|v| parse_u32(v)));
                masks(m.unwrap_or(u32::MAX))
                    .map(|(nfmask, ctmask)| Target::CtMarkSave { nfmask, ctmask })
            } else if opt("--restore-mark").is_some_and(|o| o.vals.is_empty())
                && only(&["--restore-mark", "--nfmask", "--ctmask", "--mask"])
            {
                let m = opt("--mask").and_then(|o| o.vals.first().and_then(|v| parse_u32(v)));
                masks(m.unwrap_or(u32::MAX))
                    .map(|(nfmask, ctmask)| Target::CtMarkRestore { nfmask, ctmask })
            } else {
                None
            };
            t.unwrap_or_else(|| Target::Unknown(text()))
        }
        "SNAT" | "MASQUERADE" => Target::Snat(text()),
        _ => Target::Unknown(text()),
    }
}
