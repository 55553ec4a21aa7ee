//! Times the iptables backend inside fresh network namespaces (root required):
//!
//! ```text
//! cargo run --release -p cfa-iptables --example iptables_bench [small|scale|all] [TIMEOUT_SECS]
//! ```
//!
//! `small` (the table of earlier runs): for each variant (nft, legacy), mode (ipset, one rule per
//! range) and list (Cloudflare's 22 ranges; 10,000 generated IPv4 /24s, every other /24 from
//! 11.0.0.0 so none aggregate):
//! - first sync: read + plan + apply + read back (what the engine does to verify),
//! - no-op sync: read + plan (no plan, so no apply),
//! - one change: read + plan + apply + read back after one range is replaced.
//!
//! `scale`: first sync and one range replaced at 10,000 and 60,000 ranges (five in six IPv4 /24s,
//! the rest IPv6 /48s, none aggregating: 60,000 = 50,000 + 10,000), each next to its reference
//! measured in the same run, into a fresh namespace:
//! - ipset mode: one `ipset restore` creating both sets with the same members;
//! - per-range mode: `iptables-restore` + `ip6tables-restore` (of the variant) of the same rules
//!   (our chain with one rule per range and the jump from `INPUT`).
//!
//! The reference for a change is loading the whole changed list the same way (what a script
//! without a diff does). Times are medians of three runs (one run for per-range with iptables-nft
//! at 60,000, which is slow); every tool call is killed after TIMEOUT_SECS (default 180), and a
//! case that hit it is reported as such.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use cfa_core::{AllowList, Backend, Family, Plan, RuleSpec, Runner, Structure};
use cfa_iptables::rules::{chain_rules, create_set, restore_input, Sources};
use cfa_iptables::{
    IpsetMode, IptablesBackend, IptablesOptions, Tools, Variant, DEFAULT_CHAIN, SET_V4, SET_V6,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use testkit::NetNs;

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

/// `n` IPv4 /24s, every other one from 11.0.0.0.
fn generated(n: u32) -> AllowList {
    let base = u32::from(Ipv4Addr::new(11, 0, 0, 0));
    (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + i * 512), 24).expect("prefix")))
        .collect()
}

/// `v4` IPv4 /24s as [`generated`] and `v6` IPv6 /48s, every other one from 2a00::.
fn mixed(v4: u32, v6: u32) -> AllowList {
    let base = u128::from(Ipv6Addr::new(0x2a00, 0, 0, 0, 0, 0, 0, 0));
    let mut list = generated(v4);
    for i in 0..u128::from(v6) {
        list.insert(IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(base + ((2 * i) << 80)), 48).expect("prefix"),
        ));
    }
    list
}

/// `list` with its first IPv4 range replaced by one no other range touches.
fn one_changed(list: &AllowList) -> AllowList {
    let mut changed = list.clone();
    let gone = changed.v4.iter().next().copied().expect("non-empty");
    changed.v4.remove(&gone);
    changed.insert("203.0.113.0/24".parse().expect("net"));
    changed
}

fn backend(ns: &NetNs, variant: Variant, ipset: IpsetMode, timeout: Duration) -> IptablesBackend {
    let options = IptablesOptions {
        variant,
        ipset,
        ..IptablesOptions::default()
    };
    IptablesBackend::new(
        options,
        RuleSpec::default(),
        Runner::in_netns(ns.name()).with_timeout(timeout),
    )
    .expect("backend")
}

/// read + plan + apply + read back; the error (a timeout, say) as text.
fn try_sync(b: &IptablesBackend, desired: &AllowList) -> Result<Duration, String> {
    let start = Instant::now();
    let live = b.read().map_err(|e| e.to_string())?;
    if let Some(plan) = Plan::new(&live, desired) {
        b.apply(&plan).map_err(|e| e.to_string())?;
        let after = b.read().map_err(|e| e.to_string())?;
        assert_eq!(after.structure, Structure::Current);
        assert_eq!(after.entries, *desired);
    }
    Ok(start.elapsed())
}

fn sync(b: &IptablesBackend, desired: &AllowList) -> Duration {
    try_sync(b, desired).expect("sync")
}

/// The reference: `list` loaded into the (fresh) namespace by the tools alone, the way our
/// backend would hold it: both sets in one `ipset restore`, or our chain and jump in one
/// `iptables-restore` per family.
fn reference(
    runner: &Runner,
    tools: Tools,
    ipset: bool,
    list: &AllowList,
) -> Result<Duration, String> {
    let mut inputs = Vec::new();
    if ipset {
        let mut input = String::new();
        for (family, set) in [(Family::V4, SET_V4), (Family::V6, SET_V6)] {
            input.push_str(&create_set(set, family, list.len_of(family)));
            input.push('\n');
            for net in list.iter_family(family) {
                input.push_str(&format!("add {set} {net}\n"));
            }
        }
        inputs.push(("ipset".to_string(), vec![String::from("restore")], input));
    } else {
        for family in Family::ALL {
            let nets: Vec<IpNet> = list.iter_family(family).collect();
            let rules = chain_rules(DEFAULT_CHAIN, &RuleSpec::default(), Sources::Ranges(&nets));
            let input = restore_input(DEFAULT_CHAIN, &rules, true, &[]);
            let args = ["-w", "10", "--noflush"].map(String::from).to_vec();
            inputs.push((tools.restore(family), args, input));
        }
    }
    let start = Instant::now();
    for (program, args, input) in &inputs {
        runner
            .run(program, args, Some(input))
            .map_err(|e| e.to_string())?;
    }
    Ok(start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `runs` results, or the first error.
fn median_of(
    runs: usize,
    mut f: impl FnMut() -> Result<Duration, String>,
) -> Result<Duration, String> {
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(f()?);
    }
    Ok(median(times))
}

fn cell(r: &Result<Duration, String>, timeout: Duration) -> String {
    match r {
        Ok(d) => ms(*d),
        Err(e) if e.contains("without finishing") => format!("timeout (> {} s)", timeout.as_secs()),
        Err(e) => format!("failed: {e}"),
    }
}

fn ratio(ours: &Result<Duration, String>, reference: &Result<Duration, String>) -> String {
    match (ours, reference) {
        (Ok(a), Ok(b)) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "—".to_string(),
    }
}

const VARIANTS: [(Variant, &str); 2] = [(Variant::Nft, "nft"), (Variant::Legacy, "legacy")];
const MODES: [(IpsetMode, &str); 2] = [
    (IpsetMode::Always, "ipset"),
    (IpsetMode::Never, "per-range"),
];

fn small(timeout: Duration) {
    let lists = [
        ("22 (Cloudflare)", cloudflare()),
        ("10,000 /24", generated(10_000)),
    ];
    println!("| variant | mode | ranges | first sync ms | no-op sync ms | one change ms |");
    println!("|---|---|---|---:|---:|---:|");
    for (variant, vname) in VARIANTS {
        for (ipset, mname) in MODES {
            for (lname, list) in &lists {
                let ns = NetNs::new("iptbench");
                let b = backend(&ns, variant, ipset, timeout);
                let first = sync(&b, list);
                // Best of three: one run's noise (other builds on the machine) is not the backend.
                let noop = (0..3).map(|_| sync(&b, list)).min().expect("runs");
                let change = sync(&b, &one_changed(list));
                println!(
                    "| {vname} | {mname} | {lname} | {} | {} | {} |",
                    ms(first),
                    ms(noop),
                    ms(change)
                );
                b.purge().expect("purge");
            }
        }
    }
}

fn scale(timeout: Duration) {
    let lists = [
        ("10,000 (8,334 v4 + 1,666 v6)", mixed(8_334, 1_666)),
        ("60,000 (50,000 v4 + 10,000 v6)", mixed(50_000, 10_000)),
    ];
    println!(
        "| variant | mode | ranges | first sync ms | reference ms | ratio | one change ms | reference ms | ratio |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (variant, vname) in VARIANTS {
        for (ipset, mname) in MODES {
            for (lname, list) in &lists {
                let slow =
                    variant == Variant::Nft && ipset == IpsetMode::Never && list.len() > 10_000;
                let runs = if slow { 1 } else { 3 };
                let changed = one_changed(list);
                let fresh_reference = |l: &AllowList| {
                    let ns = NetNs::new("iptref");
                    let b = backend(&ns, variant, ipset, timeout);
                    let runner = Runner::in_netns(ns.name()).with_timeout(timeout);
                    reference(&runner, b.tools(), b.uses_ipset(), l)
                };
                let ref_first = median_of(runs, || fresh_reference(list));
                let ref_change = median_of(runs, || fresh_reference(&changed));
                // Ours: each first sync in a fresh namespace; the last one stays for the changes,
                // which alternate between the two lists (each one range replaced).
                let mut kept = None;
                let first = median_of(runs, || {
                    let ns = NetNs::new("iptbench");
                    let b = backend(&ns, variant, ipset, timeout);
                    let t = try_sync(&b, list);
                    kept = Some((ns, b));
                    t
                });
                let change = match (&first, &kept) {
                    (Ok(_), Some((_, b))) => {
                        let mut turn = 0;
                        median_of(runs, || {
                            turn += 1;
                            try_sync(b, if turn % 2 == 1 { &changed } else { list })
                        })
                    }
                    _ => Err("the first sync did not finish".to_string()),
                };
                if let Some((_, b)) = &kept {
                    let _ = b.purge();
                }
                drop(kept);
                println!(
                    "| {vname} | {mname} | {lname} | {} | {} | {} | {} | {} | {} |",
                    cell(&first, timeout),
                    cell(&ref_first, timeout),
                    ratio(&first, &ref_first),
                    cell(&change, timeout),
                    cell(&ref_change, timeout),
                    ratio(&change, &ref_change),
                );
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "all".to_string());
    let timeout = args
        .next()
        .map(|s| s.parse::<u64>().expect("TIMEOUT_SECS: whole seconds"))
        .map_or(Duration::from_secs(180), Duration::from_secs);
    match what.as_str() {
        "small" => small(timeout),
        "scale" => scale(timeout),
        "all" => {
            small(timeout);
            println!();
            scale(timeout);
        }
        other => {
            eprintln!("usage: iptables_bench [small|scale|all] [TIMEOUT_SECS] (not {other:?})");
            std::process::exit(2);
        }
    }
}
