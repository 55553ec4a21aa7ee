//! `audit`: the Error 521 doctor. Read-only: would Cloudflare's SYN reach the web server, and
//! would a stranger's?
//!
//! `app::audit` gathers what the host shows (our objects, the whole ruleset the kernel runs at the
//! input hook, listening sockets, the list in use); [`analyze`] is pure and turns that into
//! [`Finding`]s; [`text()`], [`json()`] and [`nagios()`] print them.
//!
//! "Blocked" and "not restrictive" are decided over address ranges, not samples: every range is
//! split at every boundary the ruleset matches on ([`cfa_eval::Evaluate::boundaries`]), and one
//! address per piece is evaluated, so a ban on one address inside a /13 is found.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cfa_core::{AllowList, Family, Live, Protocol, RuleSpec, Runner, Structure};
use cfa_eval::{combine, Decision, Evaluate, HookResult, Packet, Verdict, L4};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};

use crate::listen::Socket;
use crate::sources::{Resolved, Served};

/// How bad a finding is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a problem.
    Info,
    /// Something is wrong or unknown, Cloudflare still gets in.
    Warning,
    /// Visitors see Error 521, or the allowlist is not there.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        })
    }
}

/// One thing the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A fixed name: `missing`, `drift`, `stale`, `blocked`, `not_restrictive`,
    /// `not_listening`, `loopback_only`, `conflicting_firewall`, `unknown`.
    pub kind: &'static str,
    /// How bad.
    pub severity: Severity,
    /// One line an operator can act on.
    pub message: String,
    /// The facts behind it (rules, ranges, sockets), one a line.
    pub evidence: Vec<String>,
}

/// A ruleset the kernel runs, with what it is (`nftables`, `iptables-legacy`, ...).
pub type Named = (String, Box<dyn Evaluate>);

/// Everything the audit looks at, gathered read-only by `app::audit`.
pub struct Observed {
    /// The backend the configuration (or `auto`) chose.
    pub backend: String,
    /// The backend `auto` detection would choose on this host, when the configuration names
    /// another one explicitly.
    pub detected_other: Option<String>,
    /// Our objects as the backend reads them, or why they could not be read.
    pub live: Result<Live, String>,
    /// The list in use (every source, aggregated), managed families only.
    pub desired: AllowList,
    /// Where each source's list came from.
    pub sources: Vec<Resolved>,
    /// Whether `state_dir/state.json` exists.
    pub state_present: bool,
    /// The rule shape.
    pub spec: RuleSpec,
    /// `audit.max_age` in seconds.
    pub max_age: u64,
    /// Every ruleset the kernel runs at the input hook, each with what it is.
    pub rulesets: Vec<Named>,
    /// Rulesets that could not be read (a tool failed, output not understood).
    pub unreadable: Vec<String>,
    /// Listening sockets, TCP and UDP.
    pub sockets: Vec<Socket>,
    /// Socket inode -> process.
    pub owners: BTreeMap<u64, String>,
}

/// What one address meets on one port, with the base chain that decided it.
fn decide(
    rulesets: &[(String, Box<dyn Evaluate>)],
    packet: &Packet,
) -> (Decision, Vec<HookResult>) {
    let results: Vec<HookResult> = rulesets
        .iter()
        .flat_map(|(_, r)| r.evaluate(packet))
        .collect();
    (combine(&results), results)
}

/// The protocols the spec governs.
fn protocols(protocol: Protocol) -> Vec<L4> {
    match protocol {
        Protocol::Tcp => vec![L4::Tcp],
        Protocol::Udp => vec![L4::Udp],
        Protocol::Both => vec![L4::Tcp, L4::Udp],
    }
}

/// The ports the audit asks about: the governed ones, or 80 and 443 for `ports: []`.
fn audited_ports(spec: &RuleSpec) -> Vec<u16> {
    if spec.ports.is_empty() {
        vec![80, 443]
    } else {
        spec.ports.clone()
    }
}

/// An address as a number in its family's space (IPv4 in the low 32 bits).
fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn addr(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    family: Family,
    first: u128,
    last: u128,
}

impl Span {
    fn of(net: &IpNet) -> Span {
        Span {
            family: Family::of(net),
            first: num(net.network()),
            last: num(net.broadcast()),
        }
    }

    /// The range in CIDR form (the fewest networks covering exactly it).
    fn cidrs(&self) -> Vec<IpNet> {
        let (first, last) = (addr(self.family, self.first), addr(self.family, self.last));
        match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect()
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()
            }
            _ => vec![],
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.cidrs();
        match c.as_slice() {
            [one] => write!(f, "{one}"),
            _ => write!(
                f,
                "{}-{}",
                addr(self.family, self.first),
                addr(self.family, self.last)
            ),
        }
    }
}

/// `spans` split at every boundary in `cuts` (addresses where an answer may change).
fn split(spans: &[Span], cuts: &[u128]) -> Vec<Span> {
    let mut out = Vec::new();
    for s in spans {
        let mut start = s.first;
        let mut inner: Vec<u128> = cuts
            .iter()
            .copied()
            .filter(|c| *c > s.first && *c <= s.last)
            .collect();
        inner.sort_unstable();
        inner.dedup();
        for c in inner {
            out.push(Span {
                family: s.family,
                first: start,
                last: c - 1,
            });
            start = c;
        }
        out.push(Span {
            family: s.family,
            first: start,
            last: s.last,
        });
    }
    out
}

/// The address space of `family` outside `list` and outside what never arrives from outside
/// (unspecified, loopback, multicast, IPv4 class E).
fn complement(family: Family, list: &AllowList) -> Vec<Span> {
    let max = match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    };
    let never: &[&str] = match family {
        Family::V4 => &["0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3"],
        Family::V6 => &["::/127", "ff00::/8"],
    };
    let mut taken: Vec<Span> = list
        .iter_family(family)
        .chain(never.iter().map(|s| s.parse().expect("static network")))
        .map(|n| Span::of(&n))
        .collect();
    taken.sort_by_key(|s| s.first);
    let mut out = Vec::new();
    let mut next: u128 = 0;
    let mut done = false;
    for t in taken {
        if t.first > next {
            out.push(Span {
                family,
                first: next,
                last: t.first - 1,
            });
        }
        if t.last == max {
            done = true;
            break;
        }
        next = next.max(t.last + 1);
    }
    if !done && next <= max {
        out.push(Span {
            family,
            first: next,
            last: max,
        });
    }
    out
}

/// The cut points of every ruleset for one family.
fn cuts(rulesets: &[Named], family: Family) -> Vec<u128> {
    rulesets
        .iter()
        .flat_map(|(_, r)| r.boundaries(family == Family::V6))
        .filter(|a| Family::of(&IpNet::from(*a)) == family)
        .map(num)
        .collect()
}

/// The rule a decision names, for messages: the deciding chain and rule, or what was unknown.
fn deciding(d: &Decision) -> String {
    match &d.by {
        Some(r) => match &r.rule {
            Some(rule) => format!("{} in {}: {rule}", r.verdict, r.chain),
            None => format!("{} in {}", r.verdict, r.chain),
        },
        None => d.verdict.to_string(),
    }
}

/// The first accepting rule among `results`, by priority: who let a stranger in.
fn accepting(results: &[HookResult]) -> String {
    let mut sorted: Vec<&HookResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    let named: Vec<String> = sorted
        .iter()
        .filter(|r| r.verdict == Verdict::Accept)
        .map(|r| match &r.rule {
            Some(rule) => format!("{}: {rule}", r.chain),
            None => format!("{} (no rule matched)", r.chain),
        })
        .collect();
    if named.is_empty() {
        "no base chain at the input hook (nothing filters it)".into()
    } else {
        named.join("; then ")
    }
}

/// Turns what was observed into findings, most severe first. Pure.
pub fn analyze(o: &Observed, now: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    presence(o, &mut out);
    freshness(o, now, &mut out);
    reachability(o, &mut out);
    listeners(o, &mut out);
    if let Some(other) = &o.detected_other {
        out.push(Finding {
            kind: "conflicting_firewall",
            severity: Severity::Warning,
            message: format!(
                "the configuration uses {} but this host is managed by {other} (what `backend: auto` finds): \
                 rules of {} may be overridden or flushed by {other}; set `backend: {other}` or `auto`",
                o.backend, o.backend
            ),
            evidence: vec![format!("configured: {}; detected: {other}", o.backend)],
        });
    }
    for u in &o.unreadable {
        out.push(Finding {
            kind: "unknown",
            severity: Severity::Warning,
            message: format!("a ruleset could not be read, so the verdicts may be incomplete: {u}"),
            evidence: vec![u.clone()],
        });
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn presence(o: &Observed, out: &mut Vec<Finding>) {
    let live = match &o.live {
        Ok(live) => live,
        Err(e) => {
            out.push(Finding {
                kind: "unknown",
                severity: Severity::Warning,
                message: format!("cannot read the {} allowlist: {e}", o.backend),
                evidence: vec![e.clone()],
            });
            return;
        }
    };
    if live.structure == Structure::Absent || live.entries.is_empty() {
        out.push(Finding {
            kind: "missing",
            severity: Severity::Critical,
            message: format!(
                "the allowlist is not in {}: run `cf-allowlist sync` (and enable its timer)",
                o.backend
            ),
            evidence: vec![format!(
                "{:?}, {} entries",
                live.structure,
                live.entries.len()
            )],
        });
        return;
    }
    let missing = o.desired.difference(&live.entries);
    let extra = live.entries.difference(&o.desired);
    let mut evidence = Vec::new();
    if let Structure::Outdated(why) = &live.structure {
        evidence.push(format!("objects: {why}"));
    }
    if !missing.is_empty() {
        evidence.push(format!("missing: {}", joined(&missing)));
    }
    if !extra.is_empty() {
        evidence.push(format!("extra: {}", joined(&extra)));
    }
    if !evidence.is_empty() {
        out.push(Finding {
            kind: "drift",
            severity: Severity::Warning,
            message: format!(
                "the {} allowlist differs from the list ({} missing, {} extra): run `cf-allowlist sync`",
                o.backend,
                missing.len(),
                extra.len()
            ),
            evidence,
        });
    }
}

fn joined(list: &AllowList) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn freshness(o: &Observed, now: u64, out: &mut Vec<Finding>) {
    if !o.state_present {
        out.push(Finding {
            kind: "stale",
            severity: Severity::Warning,
            message: "no state file: no sync has completed on this host yet".into(),
            evidence: vec![],
        });
    }
    for s in &o.sources {
        match &s.served {
            Served::Cache { age_seconds, reason } if *age_seconds > o.max_age => out.push(Finding {
                kind: "stale",
                severity: Severity::Warning,
                message: format!(
                    "source {} is served from a cached list {} old (more than audit.max_age): {reason}",
                    s.id,
                    crate::state::human_age(*age_seconds)
                ),
                evidence: vec![format!("{} ranges from the cache", s.entries)],
            }),
            Served::Embedded { date, reason } => out.push(Finding {
                kind: "stale",
                severity: Severity::Warning,
                message: format!(
                    "source {} is served from the snapshot compiled into this binary ({date}): {reason}",
                    s.id
                ),
                evidence: vec![],
            }),
            Served::Nothing { reason } => out.push(Finding {
                kind: "stale",
                severity: Severity::Warning,
                message: format!("source {} contributes nothing: {reason}", s.id),
                evidence: vec![],
            }),
            _ => {}
        }
    }
    let _ = now;
}

/// `blocked` and `not_restrictive`.
fn reachability(o: &Observed, out: &mut Vec<Finding>) {
    let ports = audited_ports(&o.spec);
    let protos = protocols(o.spec.protocol);
    let mut blocked: Vec<String> = Vec::new();
    let mut blocked_rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut open: Vec<String> = Vec::new();
    for family in o.spec.families.iter().copied() {
        let cut = cuts(&o.rulesets, family);
        let allowed: Vec<Span> = o
            .desired
            .iter_family(family)
            .map(|n| Span::of(&n))
            .collect();
        // One probe per piece, protocol and port: (where, the packet, the verdict, every chain).
        let probe = |spans: Vec<Span>| {
            let mut out = Vec::new();
            for piece in split(&spans, &cut) {
                for proto in &protos {
                    for port in &ports {
                        let packet = Packet {
                            src: addr(family, piece.first),
                            dport: *port,
                            proto: *proto,
                        };
                        let (d, results) = decide(&o.rulesets, &packet);
                        let at = format!("{piece} {}/{port}", proto.name());
                        out.push((at, packet, d, results));
                    }
                }
            }
            out
        };
        for (at, _, d, _) in probe(allowed) {
            match &d.verdict {
                Verdict::Accept => {}
                Verdict::Unknown(_) => unknown.push(format!("{at}: {}", deciding(&d))),
                _ => {
                    let why = deciding(&d);
                    *blocked_rules.entry(why.clone()).or_default() += 1;
                    blocked.push(format!("{at}: {why}"));
                }
            }
        }
        if o.spec.restrict {
            for (at, packet, d, results) in probe(complement(family, &o.desired)) {
                match d.verdict {
                    Verdict::Accept => open.push(format!(
                        "{at} (e.g. {}): accepted by {}",
                        packet.src,
                        accepting(&results)
                    )),
                    Verdict::Unknown(_) => unknown.push(format!("{at}: {}", deciding(&d))),
                    _ => {}
                }
            }
        }
    }
    if !blocked.is_empty() {
        let rules: Vec<String> = blocked_rules.keys().take(3).cloned().collect();
        out.push(Finding {
            kind: "blocked",
            severity: Severity::Critical,
            message: format!(
                "Cloudflare is refused on {} range/port piece(s) of the allowlist (visitors get Error 521 through those edges): {}",
                blocked.len(),
                rules.join("; ")
            ),
            evidence: blocked,
        });
    }
    if !open.is_empty() {
        out.push(Finding {
            kind: "not_restrictive",
            severity: Severity::Warning,
            message: format!(
                "restrict is on but {} range/port piece(s) outside the allowlist are accepted: attackers can bypass Cloudflare",
                open.len()
            ),
            evidence: open,
        });
    }
    if !unknown.is_empty() {
        out.push(Finding {
            kind: "unknown",
            severity: Severity::Warning,
            message: format!(
                "the verdict for {} range/port piece(s) could not be decided from the ruleset",
                unknown.len()
            ),
            evidence: unknown,
        });
    }
}

/// `not_listening` and `loopback_only`, per governed port and protocol.
fn listeners(o: &Observed, out: &mut Vec<Finding>) {
    if o.spec.ports.is_empty() {
        return;
    }
    for proto in protocols(o.spec.protocol) {
        for port in &o.spec.ports {
            let here: Vec<&Socket> = o
                .sockets
                .iter()
                .filter(|s| s.proto == proto && s.port == *port)
                .collect();
            let describe = |s: &&Socket| {
                let owner = o
                    .owners
                    .get(&s.inode)
                    .map(|p| format!(" by {p}"))
                    .unwrap_or_default();
                format!("{} {}:{}{owner}", proto.name(), s.addr, s.port)
            };
            if here.is_empty() {
                out.push(Finding {
                    kind: "not_listening",
                    severity: Severity::Critical,
                    message: format!(
                        "nothing listens on {}/{port}: the web server is down or on another port (Error 521)",
                        proto.name()
                    ),
                    evidence: vec![],
                });
            } else if here.iter().all(|s| s.loopback_only()) {
                out.push(Finding {
                    kind: "loopback_only",
                    severity: Severity::Critical,
                    message: format!(
                        "{}/{port} listens on loopback only: Cloudflare cannot reach it (Error 521); bind it to 0.0.0.0 / :: or the public address",
                        proto.name()
                    ),
                    evidence: here.iter().map(describe).collect(),
                });
            }
        }
    }
}

/// The worst severity found, if any.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

/// The text report: most severe first, one line each, the evidence indented.
pub fn text(o: &Observed, findings: &[Finding]) -> String {
    if findings.is_empty() {
        return format!(
            "cf-allowlist audit: OK ({}: {} ranges; Cloudflare reaches every governed port; nothing else found)\n",
            o.backend,
            o.desired.len()
        );
    }
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!("{} {}: {}\n", f.severity, f.kind, f.message));
        for e in f.evidence.iter().take(20) {
            s.push_str(&format!("    {e}\n"));
        }
        if f.evidence.len() > 20 {
            s.push_str(&format!("    ... {} more\n", f.evidence.len() - 20));
        }
    }
    s
}

/// The JSON report (`"schema": 1`).
pub fn json(o: &Observed, findings: &[Finding]) -> Value {
    json!({
        "schema": crate::report::SCHEMA,
        "command": "audit",
        "backend": o.backend,
        "source": o.sources,
        "ranges": o.desired.len(),
        "findings": findings,
    })
}

/// The age of the oldest list in use, in seconds (0 when every source answered now).
fn list_age(o: &Observed) -> u64 {
    o.sources
        .iter()
        .map(|s| match s.served {
            Served::Cache { age_seconds, .. } => age_seconds,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The Nagios plugin line and its exit code (0 OK, 1 WARNING, 2 CRITICAL).
pub fn nagios(o: &Observed, findings: &[Finding]) -> (String, u8) {
    let (state, code) = match worst(findings) {
        Some(Severity::Critical) => ("CRITICAL", 2),
        Some(Severity::Warning) => ("WARNING", 1),
        _ => ("OK", 0),
    };
    let blocked = findings
        .iter()
        .find(|f| f.kind == "blocked")
        .map(|f| f.evidence.len())
        .unwrap_or(0);
    let count = |sev: Severity| findings.iter().filter(|f| f.severity == sev).count();
    let summary = if findings.iter().all(|f| f.severity == Severity::Info) {
        format!("{}: {} ranges, effective", o.backend, o.desired.len())
    } else {
        // One short line: the counts, then each kind once, most severe first.
        let mut kinds: Vec<&str> = Vec::new();
        for f in findings.iter().filter(|f| f.severity > Severity::Info) {
            if !kinds.contains(&f.kind) {
                kinds.push(f.kind);
            }
        }
        let first = findings
            .iter()
            .find(|f| f.severity > Severity::Info)
            .map(|f| f.message.as_str())
            .unwrap_or_default();
        format!(
            "{} critical, {} warning: {} ({first})",
            count(Severity::Critical),
            count(Severity::Warning),
            kinds.join(", ")
        )
    };
    (
        format!(
            "CF-ALLOWLIST {state} - {summary} | ranges={} age={}s blocked={blocked}\n",
            o.desired.len(),
            list_age(o)
        ),
        code,
    )
}

/// Reads every ruleset the kernel runs at the input hook: nftables (less the tables iptables-nft
/// keeps, which are read from `iptables-nft-save` with their ipsets), and iptables-legacy.
pub fn rulesets(runner: &Runner) -> (Vec<Named>, Vec<String>) {
    let mut out: Vec<Named> = Vec::new();
    let mut problems = Vec::new();
    let run = |program: &str, args: &[&str]| -> Option<Result<String, String>> {
        if !runner.has(program) {
            return None;
        }
        Some(
            runner
                .run(program, args, None)
                .map(|o| o.stdout)
                .map_err(|e| e.to_string()),
        )
    };
    let ipset = match run("ipset", &["save"]) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            problems.push(format!("ipset save: {e}"));
            String::new()
        }
        None => String::new(),
    };
    let mut compat_tables: Vec<(String, String)> = Vec::new();
    for (variant, label) in [("nft", "iptables-nft"), ("legacy", "iptables-legacy")] {
        let v4 = run(&format!("iptables-{variant}-save"), &[]);
        let v6 = run(&format!("ip6tables-{variant}-save"), &[]);
        let mut texts = Vec::new();
        for (family, got) in [("ip", v4), ("ip6", v6)] {
            match got {
                Some(Ok(text)) => {
                    if variant == "nft" {
                        compat_tables.extend(
                            text.lines()
                                .filter_map(|l| l.strip_prefix('*'))
                                .map(|t| (family.to_string(), t.trim().to_string())),
                        );
                    }
                    texts.push(text);
                }
                Some(Err(e)) => {
                    problems.push(format!("{label} ({family}): {e}"));
                    texts.push(String::new());
                }
                None => texts.push(String::new()),
            }
        }
        if texts
            .iter()
            .all(|t| !t.lines().any(|l| l.starts_with("-A ")))
        {
            // No rules: only policies, which an empty table of this variant does not have.
            let policies_drop = texts
                .iter()
                .any(|t| t.lines().any(|l| l.starts_with(':') && l.contains(" DROP")));
            if !policies_drop {
                continue;
            }
        }
        match cfa_eval::ipt::Ruleset::parse(label, &texts[0], &texts[1], &ipset) {
            Ok(r) => out.push((label.to_string(), Box::new(r))),
            Err(e) => problems.push(format!("{label}: {e}")),
        }
    }
    match run("nft", &["-j", "list", "ruleset"]) {
        Some(Ok(json)) => match cfa_eval::nft::Ruleset::parse(&json) {
            Ok(r) => out.push((
                "nftables".to_string(),
                Box::new(r.without_tables(&compat_tables)),
            )),
            Err(e) => problems.push(format!("nft -j list ruleset: {e}")),
        },
        Some(Err(e)) => problems.push(format!("nft -j list ruleset: {e}")),
        None => {}
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(s: &str) -> Span {
        Span::of(&s.parse().unwrap())
    }

    #[test]
    fn ranges_split_at_every_boundary_inside_them() {
        let cut = vec![
            num("104.16.5.7".parse().unwrap()),
            num("104.16.5.8".parse().unwrap()),
        ];
        let pieces = split(&[span("104.16.0.0/13")], &cut);
        let shown: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "104.16.0.0-104.16.5.6",
                "104.16.5.7/32",
                "104.16.5.8-104.23.255.255"
            ]
        );
        // Boundaries outside, or at the first address, do not split.
        let outside = vec![
            num("10.0.0.0".parse().unwrap()),
            num("104.16.0.0".parse().unwrap()),
        ];
        assert_eq!(split(&[span("104.16.0.0/13")], &outside).len(), 1);
    }

    #[test]
    fn the_complement_leaves_out_the_list_and_what_never_arrives() {
        let list: AllowList = ["104.16.0.0/13".parse::<IpNet>().unwrap()]
            .into_iter()
            .collect();
        let c = complement(Family::V4, &list);
        let shown: Vec<String> = c.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "1.0.0.0-104.15.255.255",
                "104.24.0.0-126.255.255.255",
                "128.0.0.0-223.255.255.255"
            ]
        );
        let v6 = complement(Family::V6, &AllowList::new());
        assert_eq!(v6.first().unwrap().first, 2);
        assert_eq!(
            v6.last().unwrap().last,
            num("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap())
        );
    }

    /// A ruleset that refuses `banned` sources on every port and accepts the rest, and accepts
    /// `open` sources (for restrict); one base chain at priority 0.
    struct Fake {
        banned: Vec<IpNet>,
        unknown: Vec<IpNet>,
    }

    impl Evaluate for Fake {
        fn evaluate(&self, p: &Packet) -> Vec<HookResult> {
            let hit = |list: &[IpNet]| list.iter().any(|n| n.contains(&p.src));
            let (verdict, rule) = if hit(&self.banned) {
                (Verdict::Drop, Some("ip saddr @f2b drop".to_string()))
            } else if hit(&self.unknown) {
                (Verdict::Unknown("meta mark".into()), None)
            } else {
                (Verdict::Accept, Some("tcp dport 443 accept".to_string()))
            };
            vec![HookResult {
                chain: "inet fake input".into(),
                priority: 0,
                verdict,
                rule,
            }]
        }

        fn boundaries(&self, v6: bool) -> Vec<IpAddr> {
            self.banned
                .iter()
                .chain(&self.unknown)
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .flat_map(|n| {
                    let last = num(n.broadcast());
                    let mut v = vec![n.network()];
                    if last < u128::MAX {
                        v.push(addr(Family::of(n), last + 1));
                    }
                    v
                })
                .collect()
        }
    }

    fn observed(banned: &[&str], unknown: &[&str], restrict: bool) -> Observed {
        let cf = cfa_core::snapshot::cloudflare();
        Observed {
            backend: "nftables".into(),
            detected_other: None,
            live: Ok(Live {
                entries: cf.clone(),
                structure: Structure::Current,
                warnings: vec![],
            }),
            desired: cf,
            sources: vec![],
            state_present: true,
            spec: RuleSpec {
                restrict,
                ..RuleSpec::default()
            },
            max_age: 7 * 86_400,
            rulesets: vec![(
                "fake".into(),
                Box::new(Fake {
                    banned: banned.iter().map(|s| s.parse().unwrap()).collect(),
                    unknown: unknown.iter().map(|s| s.parse().unwrap()).collect(),
                }),
            )],
            unreadable: vec![],
            sockets: ["0.0.0.0", "::"]
                .iter()
                .flat_map(|a| {
                    [80, 443].map(|port| Socket {
                        proto: L4::Tcp,
                        addr: a.parse().unwrap(),
                        port,
                        inode: 1,
                    })
                })
                .collect(),
            owners: BTreeMap::new(),
        }
    }

    #[test]
    fn a_clean_host_has_no_findings() {
        let o = observed(&[], &[], false);
        assert_eq!(analyze(&o, 0), vec![]);
        let (line, code) = nagios(&o, &[]);
        assert_eq!(code, 0);
        assert_eq!(
            line,
            "CF-ALLOWLIST OK - nftables: 22 ranges, effective | ranges=22 age=0s blocked=0\n"
        );
    }

    #[test]
    fn one_banned_address_inside_a_13_is_found_exactly() {
        let o = observed(&["104.16.5.7/32", "2400:cb00::1/128"], &[], false);
        let f = analyze(&o, 0);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, "blocked");
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(
            f[0].evidence,
            vec![
                "104.16.5.7/32 tcp/80: drop in inet fake input: ip saddr @f2b drop",
                "104.16.5.7/32 tcp/443: drop in inet fake input: ip saddr @f2b drop",
                "2400:cb00::1/128 tcp/80: drop in inet fake input: ip saddr @f2b drop",
                "2400:cb00::1/128 tcp/443: drop in inet fake input: ip saddr @f2b drop",
            ]
        );
        let (line, code) = nagios(&o, &f);
        assert_eq!(code, 2);
        assert!(
            line.starts_with(
                "CF-ALLOWLIST CRITICAL - 1 critical, 0 warning: blocked (Cloudflare is refused"
            ),
            "{line}"
        );
        assert!(line.ends_with("| ranges=22 age=0s blocked=4\n"), "{line}");
    }

    #[test]
    fn restrict_reports_accepted_strangers_and_unknowns_are_named() {
        let o = observed(&[], &["198.51.100.0/24"], true);
        let f = analyze(&o, 0);
        let kinds: Vec<&str> = f.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec!["not_restrictive", "unknown"], "{f:#?}");
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e
                    .contains("(e.g. 1.0.0.0): accepted by inet fake input: tcp dport 443 accept")),
            "{:?}",
            f[0].evidence
        );
        assert!(
            f[1].evidence
                .iter()
                .all(|e| e.starts_with("198.51.100.0/24 tcp/")),
            "{:?}",
            f[1].evidence
        );
    }

    #[test]
    fn listeners_missing_drift_and_stale() {
        let mut o = observed(&[], &[], false);
        o.sockets.retain(|s| s.port == 80);
        o.sockets.push(Socket {
            proto: L4::Tcp,
            addr: "127.0.0.1".parse().unwrap(),
            port: 443,
            inode: 7,
        });
        o.owners.insert(7, "nginx[42]".into());
        let mut live = o.live.clone().unwrap();
        live.entries.v4.pop_first();
        live.entries.insert("198.18.0.0/15".parse().unwrap());
        o.live = Ok(live);
        o.state_present = false;
        let f = analyze(&o, 0);
        let kinds: Vec<&str> = f.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec!["loopback_only", "drift", "stale"], "{f:#?}");
        assert_eq!(f[0].evidence, vec!["tcp 127.0.0.1:443 by nginx[42]"]);
        assert!(
            f[1].evidence.iter().any(|e| e == "extra: 198.18.0.0/15"),
            "{:?}",
            f[1].evidence
        );
        o.live = Ok(Live::absent());
        let f = analyze(&o, 0);
        assert_eq!(f[0].kind, "missing");
        o.sockets.clear();
        let f = analyze(&o, 0);
        let not_listening = f.iter().filter(|f| f.kind == "not_listening").count();
        assert_eq!(not_listening, 2);
    }
}
