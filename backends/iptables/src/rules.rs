//! What we write: our chain's rules, `iptables-restore` inputs and `ipset restore` inputs.
//!
//! Every rule is generated in exactly the form `iptables-save` prints it back (option order
//! `-s`, `-p`, matches, `-j`), so that reading compares lines instead of guessing.

use std::fmt::Write as _;

use cfa_core::{Family, RuleSpec, RULE_COMMENT};
use ipnet::IpNet;

use crate::save::{ipset_family, IpSet};

/// `multiport` takes at most 15 ports; longer lists are split over several rules.
const MULTIPORT_MAX: usize = 15;

/// Where the accept rules take their sources from.
#[derive(Debug, Clone, Copy)]
pub enum Sources<'a> {
    /// One rule per protocol matching the named ipset.
    Set(&'a str),
    /// One rule per range and protocol.
    Ranges(&'a [IpNet]),
}

/// The `-p ... [-m multiport --dports ...]` tails, one per protocol and port chunk, in order.
fn matches(spec: &RuleSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for proto in spec.protocol.names() {
        if spec.ports.is_empty() {
            out.push((format!("-p {proto}"), String::new()));
            continue;
        }
        for chunk in spec.ports.chunks(MULTIPORT_MAX) {
            let ports = chunk
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            out.push((
                format!("-p {proto}"),
                format!(" -m multiport --dports {ports}"),
            ));
        }
    }
    out
}

/// The rules of our chain, as `iptables-save` prints them (`-A CHAIN ...`).
pub fn chain_rules(chain: &str, spec: &RuleSpec, sources: Sources<'_>) -> Vec<String> {
    let tails = matches(spec);
    let mut rules = Vec::new();
    match sources {
        Sources::Set(set) => {
            for (proto, ports) in &tails {
                rules.push(format!(
                    "-A {chain} {proto} -m set --match-set {set} src{ports} -j ACCEPT"
                ));
            }
        }
        Sources::Ranges(nets) => {
            for net in nets {
                let source = source_match(net);
                for (proto, ports) in &tails {
                    rules.push(format!("-A {chain} {source}{proto}{ports} -j ACCEPT"));
                }
            }
        }
    }
    if spec.restrict {
        for (proto, ports) in &tails {
            rules.push(format!("-A {chain} {proto}{ports} -j DROP"));
        }
    }
    rules
}

/// The `-s NET ` part of a rule for `net`, as `iptables-save` prints it: nothing for a
/// zero-length prefix (iptables-save omits `-s 0.0.0.0/0` and `-s ::/0`: they match everyone),
/// and the address as glibc's `inet_ntop` writes it (see [`save_addr`]).
fn source_match(net: &IpNet) -> String {
    if net.prefix_len() == 0 {
        String::new()
    } else {
        format!("-s {}/{} ", save_addr(net), net.prefix_len())
    }
}

/// A network's address as the iptables tools print it (glibc `inet_ntop`). The same as Rust's
/// `Display` except for an IPv4-compatible IPv6 address (96 zero bits, then an address that is
/// not `::` or `::1`): glibc keeps its dotted tail (`::1.2.3.4`) where Rust writes hex
/// (`::102:304`). Rules written the Rust way would never compare equal to what is read back.
pub fn save_addr(net: &IpNet) -> String {
    match net {
        IpNet::V4(n) => n.addr().to_string(),
        IpNet::V6(n) => {
            let seg = n.addr().segments();
            if seg[..6].iter().all(|&w| w == 0) && seg[6] != 0 {
                let o = n.addr().octets();
                format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15])
            } else {
                n.addr().to_string()
            }
        }
    }
}

/// The jump from `INPUT` to our chain, as `iptables-save` prints it (`-A INPUT ...`).
pub fn jump_rule(chain: &str) -> String {
    format!("-A INPUT -m comment --comment {RULE_COMMENT} -j {chain}")
}

/// Turns a saved `-A CHAIN rest` line into the `-D CHAIN rest` that deletes it.
pub fn delete_of(rule_text: &str) -> String {
    match rule_text.strip_prefix("-A ") {
        Some(rest) => format!("-D {rest}"),
        None => rule_text.to_string(),
    }
}

/// An `iptables-restore --noflush` input that replaces our chain's contents with `rules`
/// (declaring the chain creates it, or flushes only it when it exists), inserts the jump at the
/// top of `INPUT` when `add_jump`, and deletes the `INPUT` rules in `delete` (saved `-A` lines).
pub fn restore_input(chain: &str, rules: &[String], add_jump: bool, delete: &[String]) -> String {
    let mut out = String::from("*filter\n");
    let _ = writeln!(out, ":{chain} - [0:0]");
    for rule in rules {
        out.push_str(rule);
        out.push('\n');
    }
    for rule in delete {
        out.push_str(&delete_of(rule));
        out.push('\n');
    }
    if add_jump {
        let _ = writeln!(
            out,
            "-I INPUT 1 -m comment --comment {RULE_COMMENT} -j {chain}"
        );
    }
    out.push_str("COMMIT\n");
    out
}

/// An `iptables-restore --noflush` input that deletes the jumps (saved `-A` lines) and, when
/// `chain_exists`, empties and deletes our chain.
pub fn purge_input(chain: &str, jumps: &[String], chain_exists: bool) -> String {
    let mut out = String::from("*filter\n");
    for rule in jumps {
        out.push_str(&delete_of(rule));
        out.push('\n');
    }
    if chain_exists {
        let _ = writeln!(out, ":{chain} - [0:0]\n-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Sizes for a `hash:net` set that will hold `n` entries: (hashsize, maxelem). The kernel grows
/// the hash by itself; `maxelem` is a hard cap, so it keeps generous headroom.
pub fn set_sizes(n: usize) -> (usize, usize) {
    let hashsize = n.next_power_of_two().clamp(1024, 1 << 20);
    let maxelem = (n * 2).next_power_of_two().max(65536);
    (hashsize, maxelem)
}

/// The `create` line of one of our sets.
pub fn create_set(name: &str, family: Family, n: usize) -> String {
    let (hashsize, maxelem) = set_sizes(n);
    format!(
        "create {name} hash:net family {} hashsize {hashsize} maxelem {maxelem}",
        ipset_family(family)
    )
}

/// One family's part of the `ipset restore` input that replaces a set's members atomically:
/// (`destroy` a stale temporary set), (`create` the real set when missing), fill a fresh
/// temporary set, `swap` it in. The temporary set then holds the old members, so that a failed
/// later step can swap them back ([`undo_set_input`]); [`finish_sets`] destroys it.
pub struct SetUpdate<'a> {
    /// The family.
    pub family: Family,
    /// The real set's name.
    pub set: &'a str,
    /// The temporary set's name.
    pub tmp: &'a str,
    /// Whether the real set exists.
    pub exists: bool,
    /// Whether a temporary set was left by an interrupted run.
    pub stale_tmp: bool,
    /// The members wanted.
    pub entries: &'a [IpNet],
    /// Changed in place instead (the real set exists, is ours and can hold the new list, and
    /// the difference is smaller than the list): these members added, then these deleted, in
    /// the live set. No temporary set. Each line of an `ipset restore` is atomic, and with the
    /// additions first every state on the way holds at least what both lists share and nothing
    /// that neither holds.
    pub in_place: Option<InPlace>,
}

/// The difference [`SetUpdate::in_place`] applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    /// Members to add.
    pub add: Vec<IpNet>,
    /// Members to delete.
    pub del: Vec<IpNet>,
}

/// The `ipset restore` lines that take the members of `set` from `from` to `to` in place:
/// additions first (see [`SetUpdate::in_place`]).
fn in_place_lines(out: &mut String, set: &str, add: &[IpNet], del: &[IpNet]) {
    for net in add {
        let _ = writeln!(out, "add {set} {net}");
    }
    for net in del {
        let _ = writeln!(out, "del {set} {net}");
    }
}

/// The `ipset restore` input for `updates`, in order.
pub fn ipset_swap_input(updates: &[SetUpdate<'_>]) -> String {
    let mut out = String::new();
    for u in updates {
        if let Some(diff) = &u.in_place {
            in_place_lines(&mut out, u.set, &diff.add, &diff.del);
            continue;
        }
        if u.stale_tmp {
            let _ = writeln!(out, "destroy {}", u.tmp);
        }
        if !u.exists {
            let _ = writeln!(out, "{}", create_set(u.set, u.family, u.entries.len()));
        }
        let _ = writeln!(out, "{}", create_set(u.tmp, u.family, u.entries.len()));
        for net in u.entries {
            let _ = writeln!(out, "add {} {net}", u.tmp);
        }
        let _ = writeln!(out, "swap {} {}", u.tmp, u.set);
    }
    out
}

/// The `ipset restore` input that ends updates: destroys the temporary sets (old members).
pub fn finish_sets(updates: &[SetUpdate<'_>]) -> String {
    updates
        .iter()
        .filter(|u| u.in_place.is_none())
        .map(|u| format!("destroy {}\n", u.tmp))
        .collect()
}

/// The `ipset restore` input that puts one family's sets back as they were before its
/// [`ipset_swap_input`] ran, completely or in part (a failed `ipset restore` keeps the lines
/// before the failing one), and possibly followed by its part of [`finish_sets`]. `old`: the
/// real set before (`None`: it did not exist); `now`: the real set now; `tmp_now`: whether the
/// temporary set exists. Members are compared sorted. When the swap happened, the temporary set
/// (the old set object) is swapped back; when it was destroyed already, the old members are
/// rebuilt into a fresh one with the old set's `create` options and swapped in. Empty when
/// there is nothing to undo; `Err` (why) when the real set is gone.
pub fn undo_set_input(
    u: &SetUpdate<'_>,
    old: Option<&IpSet>,
    now: Option<&IpSet>,
    tmp_now: bool,
) -> Result<String, String> {
    let sorted = |s: &IpSet| {
        let mut v = s.entries.clone();
        v.sort();
        v.dedup();
        v
    };
    let mut out = String::new();
    if u.in_place.is_some() {
        // Changed in place, completely or in part: the difference back, additions first.
        let (Some(old), Some(now)) = (old, now) else {
            return Err(format!(
                "{} no longer exists (an apply never destroys it)",
                u.set
            ));
        };
        let (old, now) = (sorted(old), sorted(now));
        let add: Vec<IpNet> = old
            .iter()
            .filter(|n| now.binary_search(n).is_err())
            .copied()
            .collect();
        let del: Vec<IpNet> = now
            .iter()
            .filter(|n| old.binary_search(n).is_err())
            .copied()
            .collect();
        in_place_lines(&mut out, u.set, &add, &del);
        return Ok(out);
    }
    match (old, now) {
        // Created by this run (or not yet): no rule of ours refers to it any more.
        (None, _) => {
            if tmp_now {
                let _ = writeln!(out, "destroy {}", u.tmp);
            }
            if now.is_some() {
                let _ = writeln!(out, "destroy {}", u.set);
            }
        }
        (Some(_), None) => {
            return Err(format!(
                "{} no longer exists (an apply never destroys it)",
                u.set
            ))
        }
        // The swap did not happen (or changed nothing): only the temporary set is ours.
        (Some(old), Some(now)) if sorted(old) == sorted(now) => {
            if tmp_now {
                let _ = writeln!(out, "destroy {}", u.tmp);
            }
        }
        // Swapped: the temporary set is the old set.
        (Some(_), Some(_)) if tmp_now => {
            let _ = writeln!(out, "swap {} {}\ndestroy {}", u.tmp, u.set, u.tmp);
        }
        // Swapped and finished: the old members are rebuilt.
        (Some(old), Some(_)) => {
            let _ = writeln!(out, "create {} {}", u.tmp, old.create.join(" "));
            for net in sorted(old) {
                let _ = writeln!(out, "add {} {net}", u.tmp);
            }
            let _ = writeln!(out, "swap {} {}\ndestroy {}", u.tmp, u.set, u.tmp);
        }
    }
    Ok(out)
}
