//! Times a first sync and a no-op sync of Cloudflare's 22 ranges with this backend, next to the
//! naive approach (one `ufw allow` per range, every range re-added on every run), each in a fresh
//! network namespace with an active ufw. Run as root:
//!
//! ```text
//! cargo run --release -p cfa-ufw --example ufw_bench [ROUNDS]
//! ```

use std::time::{Duration, Instant};

use cfa_core::{AllowList, Backend, Plan, RuleSpec, Runner};
use cfa_ufw::{UfwBackend, UfwOptions};
use testkit::NetNs;

fn namespace(tag: &str) -> NetNs {
    let ns = NetNs::new(tag);
    ns.overlay_etc(&["ufw", "default"]);
    ns.exec_ok("ufw", &["--force", "enable"]);
    ns
}

fn sync(b: &UfwBackend, desired: &AllowList) -> usize {
    let live = b.read().expect("read");
    match Plan::new(&live, desired) {
        None => 0,
        Some(plan) => {
            b.apply(&plan).expect("apply");
            plan.add.len() + plan.remove.len()
        }
    }
}

fn naive(ns: &NetNs, desired: &AllowList) {
    for net in desired.iter() {
        let net = net.to_string();
        ns.exec_ok(
            "ufw",
            &[
                "allow",
                "proto",
                "tcp",
                "from",
                &net,
                "to",
                "any",
                "port",
                "80,443",
                "comment",
                "cloudflare",
            ],
        );
    }
}

fn run_ours(desired: &AllowList) -> (Duration, Duration) {
    let ns = namespace("ufwbench");
    let etc = ns.etc();
    let b = UfwBackend::new(
        UfwOptions {
            dir: etc.join("ufw"),
            defaults_file: etc.join("default/ufw"),
            ..UfwOptions::default()
        },
        RuleSpec::default(),
        Runner::in_netns(ns.name()),
    );
    let first = time(|| assert_eq!(sync(&b, desired), 22));
    let noop = time(|| assert_eq!(sync(&b, desired), 0));
    (first, noop)
}

fn run_naive(desired: &AllowList) -> (Duration, Duration) {
    let ns = namespace("ufwnaive");
    let first = time(|| naive(&ns, desired));
    let noop = time(|| naive(&ns, desired));
    (first, noop)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUNDS is a number"))
        .unwrap_or(3);
    let desired = cfa_core::snapshot::cloudflare();
    assert_eq!(desired.len(), 22);

    let (mut first, mut noop, mut nfirst, mut nnoop) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // Alternate which approach goes first, so that a busy machine hurts both alike.
        let ours_first = round % 2 == 0;
        if !ours_first {
            let (f, n) = run_naive(&desired);
            nfirst.push(f);
            nnoop.push(n);
        }
        let (f, n) = run_ours(&desired);
        first.push(f);
        noop.push(n);
        if ours_first {
            let (f, n) = run_naive(&desired);
            nfirst.push(f);
            nnoop.push(n);
        }
    }
    println!("22 ranges (15 IPv4, 7 IPv6), active ufw in a network namespace, median of {rounds}:");
    println!("| approach | first sync | no-op sync |");
    println!("|---|---|---|");
    println!(
        "| cfa-ufw (read + diff + one ufw call per change) | {:.2?} | {:.2?} |",
        median(first),
        median(noop)
    );
    println!(
        "| naive (one `ufw allow` per range, every run) | {:.2?} | {:.2?} |",
        median(nfirst),
        median(nnoop)
    );
}
