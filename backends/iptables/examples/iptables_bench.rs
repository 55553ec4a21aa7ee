//! Times the iptables backend inside fresh network namespaces (root required):
//!
//!     cargo run --release -p cfa-iptables --example iptables_bench
//!
//! For each variant (nft, legacy), mode (ipset, one rule per range) and list (Cloudflare's 22
//! ranges; 10,000 generated IPv4 /24s, every other /24 from 11.0.0.0 so none aggregate):
//! - first sync: read + plan + apply + read back (what the engine does to verify),
//! - no-op sync: read + plan (no plan, so no apply),
//! - one change: read + plan + apply + read back after one range is replaced.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cfa_core::{AllowList, Backend, Plan, RuleSpec, Runner, Structure};
use cfa_iptables::{IpsetMode, IptablesBackend, IptablesOptions, Variant};
use ipnet::{IpNet, Ipv4Net};
use testkit::NetNs;

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn generated(n: u32) -> AllowList {
    let base = u32::from(Ipv4Addr::new(11, 0, 0, 0));
    (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + i * 512), 24).expect("prefix")))
        .collect()
}

fn sync(b: &IptablesBackend, desired: &AllowList) -> Duration {
    let start = Instant::now();
    let live = b.read().expect("read");
    if let Some(plan) = Plan::new(&live, desired) {
        b.apply(&plan).expect("apply");
        let after = b.read().expect("read back");
        assert_eq!(after.structure, Structure::Current);
        assert_eq!(after.entries, *desired);
    }
    start.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let lists = [
        ("22 (Cloudflare)", cloudflare()),
        ("10,000 /24", generated(10_000)),
    ];
    println!("| variant | mode | ranges | first sync ms | no-op sync ms | one change ms |");
    println!("|---|---|---|---:|---:|---:|");
    for (variant, vname) in [(Variant::Nft, "nft"), (Variant::Legacy, "legacy")] {
        for (ipset, mname) in [
            (IpsetMode::Always, "ipset"),
            (IpsetMode::Never, "per-range"),
        ] {
            for (lname, list) in &lists {
                let ns = NetNs::new("iptbench");
                let options = IptablesOptions {
                    variant,
                    ipset,
                    ..IptablesOptions::default()
                };
                let b =
                    IptablesBackend::new(options, RuleSpec::default(), Runner::in_netns(ns.name()))
                        .expect("backend");
                let first = sync(&b, list);
                // Best of three: one run's noise (other builds on the machine) is not the backend.
                let noop = (0..3).map(|_| sync(&b, list)).min().expect("runs");
                let mut changed = list.clone();
                let gone = changed.v4.iter().next().copied().expect("non-empty");
                changed.v4.remove(&gone);
                changed.insert("203.0.113.0/24".parse().expect("net"));
                let change = sync(&b, &changed);
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
