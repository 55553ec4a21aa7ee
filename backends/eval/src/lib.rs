//! What the live firewall does to one packet: a read-only evaluator of nftables and iptables
//! rulesets, for `audit`.
//!
//! The question is always the same: a **new** TCP or UDP packet from address `src` to local port
//! `dport`, arriving on a non-loopback interface, addressed to this host. Each ruleset the kernel
//! runs at the input hook is evaluated on its own ([`HookResult`]), and [`combine`] applies the
//! kernel's rule across them: a drop (or reject) anywhere is final; an accept ends only its own
//! base chain; so the packet is accepted only when every base chain lets it through.
//!
//! Whatever an evaluator cannot interpret makes its verdict [`Verdict::Unknown`], naming the
//! expression, never a guess.
//!
//! - [`nft`]: `nft -j list ruleset` (every table, every base chain on the input hook).
//! - [`ipt`]: `iptables-save` / `ip6tables-save` text plus `ipset save`, for iptables-legacy and
//!   for the tables iptables-nft keeps.

use std::fmt;
use std::net::IpAddr;

pub mod ipt;
pub mod nft;

/// A transport protocol of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP (a SYN: connection tracking state `new`).
    Tcp,
    /// UDP (the first datagram of a flow: `new`).
    Udp,
}

impl L4 {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
        }
    }
}

/// The packet asked about: new, from `src` to a local address on port `dport`, arriving on a
/// non-loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// The source address (its family decides which rulesets apply).
    pub src: IpAddr,
    /// The destination port on this host.
    pub dport: u16,
    /// The transport protocol.
    pub proto: L4,
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> port {}",
            self.proto.name(),
            self.src,
            self.dport
        )
    }
}

/// What happens to the packet in one base chain, or in the whole input hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let through (by a rule or the chain's policy).
    Accept,
    /// Dropped (silently).
    Drop,
    /// Rejected (an ICMP error or TCP reset).
    Reject,
    /// The evaluator met something it cannot interpret; what it was.
    Unknown(String),
}

impl Verdict {
    /// Drop or reject: the packet does not reach the socket.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Verdict::Drop | Verdict::Reject)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// The outcome of one base chain (nftables) or one built-in chain (iptables) at the input hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    /// The base chain, as an operator would find it: `inet filter input (priority 0)`,
    /// `iptables-legacy filter INPUT`.
    pub chain: String,
    /// Its priority on the hook (lower runs first); iptables' filter table is 0.
    pub priority: i64,
    /// What it does to the packet.
    pub verdict: Verdict,
    /// The rule that decided, as the tool prints it (with its table/chain/handle, or the
    /// `*-save` line), or the chain policy (`policy drop`). `None` when nothing decided.
    pub rule: Option<String>,
}

/// The verdict of the whole hook, and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Accept only when every base chain accepts.
    pub verdict: Verdict,
    /// The deciding base chain's result (the first refusal by priority, else the first unknown),
    /// `None` for an accept or when no chain applies.
    pub by: Option<HookResult>,
}

/// The kernel's rule across base chains: the first drop or reject (by priority) decides; an
/// unknown chain, with no refusal anywhere, makes the whole verdict unknown (it might have
/// dropped); otherwise the packet is accepted. No chain at all: accepted.
pub fn combine(results: &[HookResult]) -> Decision {
    let mut sorted: Vec<&HookResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    if let Some(r) = sorted.iter().find(|r| r.verdict.is_refusal()) {
        return Decision {
            verdict: r.verdict.clone(),
            by: Some((*r).clone()),
        };
    }
    if let Some(r) = sorted
        .iter()
        .find(|r| matches!(r.verdict, Verdict::Unknown(_)))
    {
        return Decision {
            verdict: r.verdict.clone(),
            by: Some((*r).clone()),
        };
    }
    Decision {
        verdict: Verdict::Accept,
        by: None,
    }
}

/// A ruleset that can answer for a packet: the base chains it has on the input hook for the
/// packet's family, each evaluated.
pub trait Evaluate {
    /// One result per base chain that sees the packet (none when the ruleset has no input hook
    /// for its family).
    fn evaluate(&self, packet: &Packet) -> Vec<HookResult>;

    /// Every address at which the ruleset's answer may change for the family of `v6` (IPv4
    /// when false): the first address of every network, range or set element it matches on,
    /// and the address right after its last. Splitting an address range at these points gives
    /// pieces on which every address gets the same verdict, so one address per piece decides.
    fn boundaries(&self, v6: bool) -> Vec<IpAddr>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(chain: &str, priority: i64, verdict: Verdict) -> HookResult {
        HookResult {
            chain: chain.into(),
            priority,
            verdict,
            rule: None,
        }
    }

    #[test]
    fn a_refusal_anywhere_is_final_and_the_earliest_is_named() {
        let d = combine(&[
            r("inet web input", 0, Verdict::Drop),
            r("inet cf_allowlist input", -10, Verdict::Accept),
            r("ip f2b input", -1, Verdict::Reject),
        ]);
        assert_eq!(d.verdict, Verdict::Reject);
        assert_eq!(d.by.unwrap().chain, "ip f2b input");
    }

    #[test]
    fn unknown_without_refusal_is_unknown_and_all_accept_is_accept() {
        let d = combine(&[
            r("a", 0, Verdict::Accept),
            r("b", 5, Verdict::Unknown("xt match".into())),
        ]);
        assert!(matches!(d.verdict, Verdict::Unknown(_)));
        assert_eq!(
            combine(&[r("a", 0, Verdict::Accept)]).verdict,
            Verdict::Accept
        );
        assert_eq!(combine(&[]).verdict, Verdict::Accept);
    }
}
