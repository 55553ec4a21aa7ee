//! Times a first sync and a no-op sync of Cloudflare's 22 ranges with this backend's two
//! drivers (the CLI, one `ufw` process per rule; the frontend, one Python process driving ufw's
//! own code for the whole plan), next to the naive approach (one `ufw allow` per range, every
//! range re-added on every run), each in a fresh network namespace with an active ufw. The three
//! take turns going first, round by round, so that a busy machine hurts them alike. Run as root:
//!
//! ```text
//! cargo run --release -p cfa-ufw --example ufw_bench [ROUNDS]
//! ```

use std::time::{Duration, Instant};

use cfa_core::{AllowList, Backend, Plan, RuleSpec, Runner};
use cfa_ufw::{Driver, UfwBackend, UfwOptions};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approach {
    Naive,
    Ours(Driver),
}

impl Approach {
    const ALL: [Approach; 3] = [
        Approach::Naive,
        Approach::Ours(Driver::Cli),
        Approach::Ours(Driver::Frontend),
    ];

    fn label(self) -> &'static str {
        match self {
            Approach::Naive => "naive (one `ufw allow` per range, every run)",
            Approach::Ours(Driver::Cli) => "cfa-ufw, driver cli (one `ufw` process per change)",
            Approach::Ours(Driver::Frontend) => {
                "cfa-ufw, driver frontend (one Python process per apply; no-op reads files only)"
            }
        }
    }

    /// (first sync, no-op sync) in a fresh namespace.
    fn run(self, desired: &AllowList) -> (Duration, Duration) {
        match self {
            Approach::Naive => {
                let ns = namespace("ufwnaive");
                let first = time(|| naive(&ns, desired));
                let noop = time(|| naive(&ns, desired));
                (first, noop)
            }
            Approach::Ours(driver) => {
                let ns = namespace("ufwbench");
                let etc = ns.etc();
                let b = UfwBackend::new(
                    UfwOptions {
                        dir: etc.join("ufw"),
                        defaults_file: etc.join("default/ufw"),
                        driver,
                        ..UfwOptions::default()
                    },
                    RuleSpec::default(),
                    Runner::in_netns(ns.name()),
                );
                let first = time(|| assert_eq!(sync(&b, desired), 22));
                let noop = time(|| assert_eq!(sync(&b, desired), 0));
                (first, noop)
            }
        }
    }
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
        .unwrap_or(5)
        .max(1);
    if let Err(why) = cfa_ufw::driver::frontend_available(&Runner::new()) {
        eprintln!(
            "warning: the frontend driver cannot start here ({why}); its row measures the CLI"
        );
    }
    let desired = cfa_core::snapshot::cloudflare();
    assert_eq!(desired.len(), 22);

    let mut first: Vec<Vec<Duration>> = vec![Vec::new(); Approach::ALL.len()];
    let mut noop: Vec<Vec<Duration>> = vec![Vec::new(); Approach::ALL.len()];
    for round in 0..rounds {
        // Each approach goes first in turn.
        for k in 0..Approach::ALL.len() {
            let i = (round + k) % Approach::ALL.len();
            let (f, n) = Approach::ALL[i].run(&desired);
            first[i].push(f);
            noop[i].push(n);
        }
    }
    let first: Vec<Duration> = first.into_iter().map(median).collect();
    let noop: Vec<Duration> = noop.into_iter().map(median).collect();
    let ratio = |d: Duration, naive: Duration| d.as_secs_f64() / naive.as_secs_f64();
    println!(
        "22 ranges (15 IPv4, 7 IPv6), active ufw in a network namespace, median of {rounds} \
         round(s), order rotated each round:"
    );
    println!("| approach | first sync | vs naive | no-op sync | vs naive |");
    println!("|---|---|---|---|---|");
    for (i, a) in Approach::ALL.iter().enumerate() {
        println!(
            "| {} | {:.2?} | {:.3}x | {:.2?} | {:.4}x |",
            a.label(),
            first[i],
            ratio(first[i], first[0]),
            noop[i],
            ratio(noop[i], noop[0]),
        );
    }
}
