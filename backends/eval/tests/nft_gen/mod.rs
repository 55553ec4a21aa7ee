//! A generator of random but valid nftables rulesets (as `nft -f` text) for the differential
//! test against the kernel, over a small address universe so that packets hit the rules.

#![allow(dead_code)]

use std::fmt::Write;

/// The server's addresses (one per family) on the test link.
pub const SERVER_V4: &str = "10.7.0.1";
pub const SERVER_V6: &str = "fd07::1";

/// The client's source addresses: the packets come from these.
pub const CLIENT_V4: [&str; 8] = [
    "10.7.0.2",
    "10.7.0.3",
    "10.7.0.9",
    "10.7.1.1",
    "10.7.1.200",
    "10.7.3.4",
    "10.7.128.5",
    "10.7.255.254",
];
pub const CLIENT_V6: [&str; 8] = [
    "fd07::2",
    "fd07::3",
    "fd07::9",
    "fd07::1:1",
    "fd07::1:c8",
    "fd07::3:4",
    "fd07::8000:5",
    "fd07::ffff:ffff:ffff:fffe",
];

/// The ports the server listens on (TCP and UDP).
pub const PORTS: [u16; 4] = [22, 80, 443, 8080];

/// Things the evaluator cannot decide from the ruleset alone (the generator marks the rulesets
/// that hold them).
const UNDECIDABLE: [(&str, &str); 6] = [
    ("daddr", "ip daddr 10.7.0.1"),
    ("daddr", "ip6 daddr fd07::1"),
    ("sport", "tcp sport 1-1023"),
    ("limit", "limit rate 1/minute burst 1 packets"),
    ("iifname", "iifname \"eth9\""),
    ("tcp flags", "tcp flags == syn"),
];

/// The protocols a rule part needs: (transport, IP version).
type Needs = (Option<&'static str>, Option<u8>);

fn needs(part: &str) -> Needs {
    // A protocol set or negation is a context nft cannot narrow down again.
    let l4 = if part.contains("l4proto { tcp, udp }") || part.contains("l4proto != udp") {
        Some("tcp or udp")
    } else if part.contains("tcp dport")
        || part.contains("tcp sport")
        || part.contains("tcp flags")
        || part.contains("tcp reset")
        || part.ends_with("l4proto tcp")
        || part.ends_with("protocol tcp")
        || part.ends_with("nexthdr tcp")
    {
        Some("tcp")
    } else if part.contains("udp dport")
        || part.ends_with("l4proto udp")
        || part.ends_with("protocol udp")
        || part.ends_with("nexthdr udp")
    {
        Some("udp")
    } else {
        None
    };
    let l3 = if part.contains("ip saddr")
        || part.contains("ip daddr")
        || part.contains("ip protocol")
        || part.contains("nfproto ipv4")
        || part.contains("icmp host-unreachable")
        || part.contains("icmp admin-prohibited")
    {
        Some(4)
    } else if part.contains("ip6 ") || part.contains("nfproto ipv6") || part.contains("icmpv6") {
        Some(6)
    } else {
        None
    };
    (l4, l3)
}

fn merge_ctx(have: Needs, add: Needs) -> Option<Needs> {
    let l4 = match (have.0, add.0) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.or(b),
    };
    let l3 = match (have.1, add.1) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.or(b),
    };
    Some((l4, l3))
}

/// xorshift64*: small, deterministic, good enough to pick shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One generated ruleset.
pub struct Generated {
    /// `nft -f` text (starting with `flush ruleset`).
    pub text: String,
    /// The features in it the evaluator may answer Unknown for (empty: it must decide).
    pub undecidable: Vec<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fam {
    Inet,
    Ip,
    Ip6,
}

impl Fam {
    fn name(self) -> &'static str {
        match self {
            Fam::Inet => "inet",
            Fam::Ip => "ip",
            Fam::Ip6 => "ip6",
        }
    }
    fn v4(self) -> bool {
        self != Fam::Ip6
    }
    fn v6(self) -> bool {
        self != Fam::Ip
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// A filter chain on input.
    Input,
    /// A filter chain on prerouting, with its priority.
    Pre(i32),
    /// A nat chain on input.
    NatInput,
}

struct Table {
    fam: Fam,
    name: String,
    /// Named address sets: (name, is v6, interval).
    addr_sets: Vec<(String, bool, bool)>,
    port_sets: Vec<String>,
    /// Verdict maps on saddr: (name, is v6).
    addr_maps: Vec<(String, bool)>,
    /// Sets of `ipv4_addr . inet_service`.
    concat_sets: Vec<String>,
}

pub struct Gen {
    rng: Rng,
    undecidable: Vec<&'static str>,
    /// Every base chain so far: (family, hook, the priority it runs at).
    hooks: Vec<(Fam, &'static str, i32)>,
}

fn v4_int(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}
fn v6_int(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            undecidable: Vec::new(),
            hooks: Vec::new(),
        }
    }

    fn flag(&mut self, what: &'static str) {
        if !self.undecidable.contains(&what) {
            self.undecidable.push(what);
        }
    }

    /// An address of the universe: mostly a client's, sometimes a stranger.
    fn addr(&mut self, v6: bool) -> String {
        if self.rng.chance(10) {
            return if v6 {
                "fd07::77".into()
            } else {
                "10.7.9.9".into()
            };
        }
        if v6 {
            self.rng.pick(&CLIENT_V6).to_string()
        } else {
            self.rng.pick(&CLIENT_V4).to_string()
        }
    }

    /// A prefix around a universe address.
    fn prefix(&mut self, v6: bool) -> String {
        let a = self.addr(v6);
        if v6 {
            let len = *self
                .rng
                .pick(&[128u32, 127, 126, 120, 112, 111, 96, 64, 48]);
            let n = v6_int(&a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            format!("{}/{len}", std::net::Ipv6Addr::from(n & mask))
        } else {
            let len = *self.rng.pick(&[32u32, 31, 30, 24, 23, 17, 16, 8]);
            let n = v4_int(&a);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            format!("{}/{len}", std::net::Ipv4Addr::from(n & mask))
        }
    }

    fn range(&mut self, v6: bool) -> String {
        let (a, b) = (self.addr(v6), self.addr(v6));
        let (lo, hi) = if v6 {
            if v6_int(&a) <= v6_int(&b) {
                (a, b)
            } else {
                (b, a)
            }
        } else if v4_int(&a) <= v4_int(&b) {
            (a, b)
        } else {
            (b, a)
        };
        if lo == hi {
            lo
        } else {
            format!("{lo}-{hi}")
        }
    }

    /// An address element: single, prefix or range.
    fn addr_elem(&mut self, v6: bool, interval: bool) -> String {
        if !interval {
            return self.addr(v6);
        }
        match self.rng.below(3) {
            0 => self.addr(v6),
            1 => self.prefix(v6),
            _ => self.range(v6),
        }
    }

    fn addr_elems(&mut self, v6: bool, interval: bool, n: usize) -> String {
        let mut elems: Vec<String> = (0..n).map(|_| self.addr_elem(v6, interval)).collect();
        elems.sort();
        elems.dedup();
        elems.join(", ")
    }

    fn port(&mut self) -> u16 {
        if self.rng.chance(15) {
            9999
        } else {
            *self.rng.pick(&PORTS)
        }
    }

    fn port_expr(&mut self, t: &Table) -> String {
        match self.rng.below(6) {
            0 | 1 => self.port().to_string(),
            2 => {
                let (a, b) = (self.port(), self.port());
                let (lo, hi) = (a.min(b), a.max(b));
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            }
            3 if !t.port_sets.is_empty() => format!("@{}", self.rng.pick(&t.port_sets)),
            _ => {
                let mut ps: Vec<u16> = (0..1 + self.rng.below(3)).map(|_| self.port()).collect();
                ps.sort();
                ps.dedup();
                let ps: Vec<String> = ps.iter().map(u16::to_string).collect();
                format!("{{ {} }}", ps.join(", "))
            }
        }
    }

    fn saddr_expr(&mut self, t: &Table, v6: bool) -> String {
        let sets: Vec<&(String, bool, bool)> =
            t.addr_sets.iter().filter(|(_, s6, _)| *s6 == v6).collect();
        let right = match self.rng.below(6) {
            0 => self.addr(v6),
            1 => self.prefix(v6),
            2 => self.range(v6),
            3 if !sets.is_empty() => format!("@{}", self.rng.pick(&sets).0),
            _ => {
                let n = 1 + self.rng.below(3);
                format!("{{ {} }}", self.addr_elems(v6, true, n))
            }
        };
        let neg = if self.rng.chance(25) { "!= " } else { "" };
        format!("{} saddr {neg}{right}", if v6 { "ip6" } else { "ip" })
    }

    /// One match expression valid in the table's family.
    fn match_expr(&mut self, t: &Table, hook: Hook) -> String {
        let fam = t.fam;
        loop {
            let m = match self.rng.below(24) {
                0 => "ct state new".into(),
                1 => "ct state established,related".into(),
                2 => "ct state invalid".into(),
                3 => "ct state != established".into(),
                4 => "ct state { new, untracked }".into(),
                5 => "ct state == new".into(),
                6 => "ct state untracked".into(),
                7 => (*self.rng.pick(&[
                    "meta l4proto tcp",
                    "meta l4proto udp",
                    "meta l4proto { tcp, udp }",
                    "meta l4proto != udp",
                ]))
                .into(),
                8 if fam.v4() && fam != Fam::Inet => {
                    (*self.rng.pick(&["ip protocol tcp", "ip protocol udp"])).into()
                }
                9 if fam.v6() && fam != Fam::Inet => {
                    (*self.rng.pick(&["ip6 nexthdr tcp", "ip6 nexthdr udp"])).into()
                }
                10..=12 => {
                    let proto = *self.rng.pick(&["tcp", "udp", "th"]);
                    let neg = if self.rng.chance(20) { "!= " } else { "" };
                    let p = self.port_expr(t);
                    if proto == "th" {
                        // `th` needs a transport protocol context.
                        format!("meta l4proto {{ tcp, udp }} th dport {neg}{p}")
                    } else {
                        format!("{proto} dport {neg}{p}")
                    }
                }
                13..=15 => {
                    let v6 = match fam {
                        Fam::Ip => false,
                        Fam::Ip6 => true,
                        Fam::Inet => self.rng.chance(50),
                    };
                    self.saddr_expr(t, v6)
                }
                16 => (*self
                    .rng
                    .pick(&["iif lo", "iifname != \"lo\"", "iifname \"lo\""]))
                .into(),
                17 => (*self
                    .rng
                    .pick(&["fib daddr type local", "fib daddr type != local"]))
                .into(),
                18 if fam == Fam::Inet => {
                    (*self.rng.pick(&["meta nfproto ipv4", "meta nfproto ipv6"])).into()
                }
                19 => (*self
                    .rng
                    .pick(&["meta mark 0", "meta mark 0x1", "meta mark != 0x1"]))
                .into(),
                20 if hook != Hook::Pre(-300) => {
                    (*self.rng.pick(&["ct mark 0", "ct mark 0x2"])).into()
                }
                // The client asks for no ECN: its SYN's flags are exactly syn.
                22 => (*self.rng.pick(&[
                    "tcp flags syn / syn,ack",
                    "tcp flags & (fin|syn|rst|ack) == syn",
                    "tcp flags & (syn|ack) != syn",
                    "tcp flags & ack == ack",
                ]))
                .into(),
                23 if fam.v4() => {
                    let a = self.addr_elem(false, true);
                    let p = self.port();
                    if !t.concat_sets.is_empty() && self.rng.chance(50) {
                        format!("ip saddr . tcp dport @{}", t.concat_sets[0])
                    } else {
                        format!("ip saddr . th dport {{ {a} . {p} }}")
                    }
                }
                21 if self.rng.chance(30) => {
                    let (_, m) = *self.rng.pick(&UNDECIDABLE);
                    if (m.starts_with("ip daddr") && !fam.v4())
                        || (m.starts_with("ip6 daddr") && !fam.v6())
                    {
                        continue;
                    }
                    m.into()
                }
                _ => continue,
            };
            return m;
        }
    }

    fn reject(&mut self, fam: Fam) -> String {
        let options: &[&str] = match fam {
            Fam::Inet => &[
                "reject",
                "reject with tcp reset",
                "reject with icmpx admin-prohibited",
                "reject with icmpx port-unreachable",
                "meta nfproto ipv4 reject with icmp host-unreachable",
                "reject with icmpv6 admin-prohibited",
            ],
            Fam::Ip => &[
                "reject",
                "reject with tcp reset",
                "reject with icmp admin-prohibited",
            ],
            Fam::Ip6 => &[
                "reject",
                "reject with tcp reset",
                "reject with icmpv6 addr-unreachable",
            ],
        };
        self.rng.pick(options).to_string()
    }

    /// The verdict part of a rule in a chain of `hook`; `targets` are the chains it may jump to.
    fn verdict(&mut self, t: &Table, hook: Hook, targets: &[String]) -> String {
        loop {
            let v = match self.rng.below(14) {
                0..=2 => "accept".to_string(),
                3..=5 => "drop".to_string(),
                6 | 7 if hook == Hook::Input => self.reject(t.fam),
                8 if !targets.is_empty() => format!("jump {}", self.rng.pick(targets)),
                9 if !targets.is_empty() => format!("goto {}", self.rng.pick(targets)),
                10 => "return".into(),
                11 => "counter".into(),
                12 => {
                    let tail: Vec<String> = (0..1 + self.rng.below(2))
                        .map(|_| self.vmap_verdict(targets))
                        .collect();
                    match self.rng.below(3) {
                        0 => {
                            let mut ps: Vec<u16> = PORTS.to_vec();
                            ps.truncate(tail.len());
                            let elems: Vec<String> = ps
                                .iter()
                                .zip(&tail)
                                .map(|(p, v)| format!("{p} : {v}"))
                                .collect();
                            format!("tcp dport vmap {{ {} }}", elems.join(", "))
                        }
                        1 => {
                            let v6 = match t.fam {
                                Fam::Ip => false,
                                Fam::Ip6 => true,
                                Fam::Inet => self.rng.chance(50),
                            };
                            let maps: Vec<&(String, bool)> =
                                t.addr_maps.iter().filter(|(_, m6)| *m6 == v6).collect();
                            let key = if v6 { "ip6 saddr" } else { "ip saddr" };
                            if !maps.is_empty() && self.rng.chance(50) {
                                format!("{key} vmap @{}", self.rng.pick(&maps).0)
                            } else {
                                // Distinct, non-overlapping keys: single addresses.
                                let mut addrs: Vec<String> = Vec::new();
                                for _ in 0..tail.len() {
                                    let a = self.addr(v6);
                                    if !addrs.contains(&a) {
                                        addrs.push(a);
                                    }
                                }
                                let elems: Vec<String> = addrs
                                    .iter()
                                    .zip(&tail)
                                    .map(|(a, v)| format!("{a} : {v}"))
                                    .collect();
                                format!("{key} vmap {{ {} }}", elems.join(", "))
                            }
                        }
                        _ => format!(
                            "ct state vmap {{ new : {}, established : accept }}",
                            tail[0]
                        ),
                    }
                }
                13 if matches!(hook, Hook::Pre(p) if p < -200) && self.rng.chance(40) => {
                    "notrack".into()
                }
                _ => continue,
            };
            return v;
        }
    }

    fn vmap_verdict(&mut self, targets: &[String]) -> String {
        match self.rng.below(5) {
            0 | 1 => "accept".into(),
            2 | 3 => "drop".into(),
            _ if !targets.is_empty() => format!("jump {}", self.rng.pick(targets)),
            _ => "drop".into(),
        }
    }

    fn rule(&mut self, t: &Table, hook: Hook, targets: &[String]) -> String {
        // nft refuses rules whose parts need different protocols (`udp dport 53 tcp dport 22`,
        // `ip saddr .. ip6 saddr ..`, `udp dport 53 reject with tcp reset`).
        let mut ctx = (None, None);
        let mut parts: Vec<String> = Vec::new();
        let n = self.rng.below(3);
        let undecidable = self.undecidable.clone();
        for _ in 0..n {
            for _ in 0..20 {
                let m = self.match_expr(t, hook);
                if let Some(c) = merge_ctx(ctx, needs(&m)) {
                    ctx = c;
                    parts.push(m);
                    break;
                }
            }
        }
        if self.rng.chance(10) {
            parts.push("meta mark set 0x1".into());
        }
        if self.rng.chance(5) {
            parts.push("ct mark set 0x2".into());
        }
        let mut verdict = "accept".to_string();
        for _ in 0..20 {
            let v = self.verdict(t, hook, targets);
            if merge_ctx(ctx, needs(&v)).is_some() {
                verdict = v;
                break;
            }
        }
        parts.push(verdict);
        let text = parts.join(" ");
        // A part tried and dropped must not mark the ruleset undecidable.
        self.undecidable = undecidable;
        for (what, m) in UNDECIDABLE {
            if text.contains(m) {
                self.flag(what);
            }
        }
        text
    }

    /// A base chain and the regular chains only it jumps to (jumps go to later chains only).
    fn chains(&mut self, t: &Table, idx: usize, out: &mut String) {
        let hook = match self.rng.below(10) {
            0..=5 => Hook::Input,
            6..=8 => Hook::Pre(*self.rng.pick(&[-300, -250, -150, 0, 10])),
            _ => Hook::NatInput,
        };
        let regular: Vec<String> = (0..self.rng.below(3))
            .map(|i| format!("c{idx}_{i}"))
            .collect();
        let policy = if self.rng.chance(45) {
            "drop"
        } else {
            "accept"
        };
        let (kind, hook_name, prio) = match hook {
            Hook::Input => (
                "filter",
                "input",
                *self.rng.pick(&[-150, -20, -10, 0, 0, 5, 50, 100]),
            ),
            Hook::Pre(p) => ("filter", "prerouting", p),
            Hook::NatInput => ("nat", "input", *self.rng.pick(&[-50, 100, 200])),
        };
        let effective = if kind == "nat" { 100 } else { prio };
        self.hooks.push((t.fam, hook_name, effective));
        let _ = writeln!(
            out,
            "  chain b{idx} {{\n    type {kind} hook {hook_name} priority {prio}; policy {policy};"
        );
        let rules = self.rng.below(6);
        for _ in 0..rules {
            let r = self.rule(t, hook, &regular);
            let _ = writeln!(out, "    {r}");
        }
        out.push_str("  }\n");
        for (i, name) in regular.iter().enumerate() {
            let _ = writeln!(out, "  chain {name} {{");
            let later = &regular[i + 1..];
            for _ in 0..self.rng.below(4) {
                let r = self.rule(t, hook, later);
                let _ = writeln!(out, "    {r}");
            }
            out.push_str("  }\n");
        }
    }

    fn table(&mut self, idx: usize, out: &mut String) -> Fam {
        let fam = *self.rng.pick(&[Fam::Inet, Fam::Inet, Fam::Ip, Fam::Ip6]);
        let mut t = Table {
            fam,
            name: format!("t{idx}"),
            addr_sets: Vec::new(),
            port_sets: Vec::new(),
            addr_maps: Vec::new(),
            concat_sets: Vec::new(),
        };
        let _ = writeln!(out, "table {} {} {{", fam.name(), t.name);
        // No `flags dormant`: nft 1.0.6 prints broken JSON for it (covered by fixtures).
        if fam.v4() && self.rng.chance(25) {
            // Two elements that cannot overlap (nft refuses overlapping ones): other ports.
            let (a, b) = (self.prefix(false), self.addr(false));
            let p = self.port();
            let others: Vec<u16> = PORTS.iter().copied().filter(|q| *q != p).collect();
            let (q, r) = (*self.rng.pick(&others), *self.rng.pick(&others));
            let range = if q == r {
                q.to_string()
            } else {
                format!("{}-{}", q.min(r), q.max(r))
            };
            let second = if (q.min(r)..=q.max(r)).contains(&p) {
                String::new()
            } else {
                format!(", {b} . {range}")
            };
            let _ = writeln!(
                out,
                "  set cs {{ type ipv4_addr . inet_service; flags interval; \
                 elements = {{ {a} . {p}{second} }} }}"
            );
            t.concat_sets.push("cs".into());
        }
        for s in 0..self.rng.below(3) {
            let v6 = match fam {
                Fam::Ip => false,
                Fam::Ip6 => true,
                Fam::Inet => self.rng.chance(50),
            };
            let interval = self.rng.chance(70);
            let name = format!("s{s}");
            let (ty, flags) = (
                if v6 { "ipv6_addr" } else { "ipv4_addr" },
                if interval {
                    " flags interval; auto-merge;"
                } else {
                    ""
                },
            );
            let n = self.rng.below(4);
            let elems = self.addr_elems(v6, interval, n);
            let elems = if elems.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {elems} }};")
            };
            let _ = writeln!(out, "  set {name} {{ type {ty};{flags}{elems} }}");
            t.addr_sets.push((name, v6, interval));
        }
        if self.rng.chance(30) {
            let p = self.port();
            let elems = if (400..=500).contains(&p) {
                "400-500".to_string()
            } else {
                format!("{p}, 400-500")
            };
            let _ = writeln!(
                out,
                "  set ports {{ type inet_service; flags interval; elements = {{ {elems} }} }}"
            );
            t.port_sets.push("ports".into());
        }
        if self.rng.chance(25) {
            let v6 = match fam {
                Fam::Ip => false,
                Fam::Ip6 => true,
                Fam::Inet => self.rng.chance(50),
            };
            let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
            let (a, b) = (self.addr(v6), self.prefix(v6));
            let (va, vb) = (
                *self.rng.pick(&["accept", "drop"]),
                *self.rng.pick(&["accept", "drop"]),
            );
            // A single address and a prefix may overlap: keep the prefix only then.
            let pfx: ipnet::IpNet = b.parse().unwrap();
            let elems = if pfx.contains(&a.parse::<std::net::IpAddr>().unwrap()) {
                format!("{b} : {vb}")
            } else {
                format!("{a} : {va}, {b} : {vb}")
            };
            let _ = writeln!(
                out,
                "  map vm {{ type {ty} : verdict; flags interval; elements = {{ {elems} }} }}"
            );
            t.addr_maps.push(("vm".into(), v6));
        }
        for c in 0..1 + self.rng.below(2) {
            self.chains(&t, c, out);
        }
        out.push_str("}\n");
        fam
    }

    pub fn ruleset(&mut self) -> Generated {
        self.undecidable.clear();
        let mut text = String::from("flush ruleset\n");
        // (family, has a nat chain, uses conntrack) per table.
        let mut tables: Vec<(Fam, bool, bool)> = Vec::new();
        self.hooks.clear();
        for i in 0..1 + self.rng.below(3) {
            let mut t = String::new();
            let fam = self.table(i, &mut t);
            let body: String = t.lines().filter(|l| !l.contains("type nat")).collect();
            tables.push((fam, t.contains("type nat"), body.contains("ct ")));
            text.push_str(&t);
        }
        // A nat chain runs only when conntrack is on for the family, which the evaluator
        // does not assume when nothing in the ruleset turns it on.
        for v6 in [false, true] {
            let of = |f: Fam| if v6 { f.v6() } else { f.v4() };
            let nat = tables.iter().any(|(f, n, _)| *n && of(*f));
            let ct = tables.iter().any(|(f, _, c)| *c && of(*f));
            if nat && !ct {
                self.flag("nat without conntrack");
            }
            // Chains at one priority of one hook run in an order the ruleset does not show.
            let mut seen: Vec<(&str, i32)> = Vec::new();
            let mut clash = false;
            for (f, hook, prio) in &self.hooks {
                if of(*f) {
                    clash |= seen.contains(&(*hook, *prio));
                    seen.push((*hook, *prio));
                }
            }
            if clash {
                self.flag("chains at one priority");
            }
        }
        Generated {
            text,
            undecidable: self.undecidable.clone(),
        }
    }
}
