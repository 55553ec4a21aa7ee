//! The engine's pure steps at 22 (Cloudflare's list), 10,000 and 100,000 ranges: parsing a plain
//! list and the API's JSON, strict CIDR parsing, aggregation, and planning (first sync, no-op, one
//! range changed). Run with:
//!
//! ```text
//! cargo bench --bench engine
//! ```
//!
//! Each benchmark counts ranges, so divan prints a rate per range: a rate that stays flat from
//! 10,000 to 100,000 is linear growth. Sample counts and times are capped so the whole run takes
//! well under a minute (pass divan's own `--sample-count`/`--max-time` to change that).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use cf_allowlist::plan::{plan, Inputs};
use cf_allowlist::sources::{parse_api, parse_plain};
use cfa_core::{parse_cidr, AllowList, Family, Live, Plan, Structure};
use divan::counter::ItemsCount;
use divan::{black_box, Bencher, Divan};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The sizes every benchmark runs at: 22 means Cloudflare's published list.
const SIZES: &[usize] = &[22, 10_000, 100_000];

fn main() {
    // Defaults first, then the command line, so `--sample-count` and friends still win.
    Divan::default()
        .sample_count(20)
        .min_time(Duration::from_millis(50))
        .max_time(Duration::from_millis(400))
        .config_with_args()
        .main();
}

/// `n` ranges that do not aggregate: five in six are IPv4 /24s (every other /24 from 11.0.0.0),
/// the rest IPv6 /48s (every other /48 from 2a00::). 22 is Cloudflare's own list.
fn ranges(n: usize) -> AllowList {
    if n == 22 {
        return cfa_core::snapshot::cloudflare();
    }
    let v6 = n / 6;
    let v4 = n - v6;
    let base4 = u32::from(Ipv4Addr::new(11, 0, 0, 0));
    let base6 = u128::from(Ipv6Addr::new(0x2a00, 0, 0, 0, 0, 0, 0, 0));
    let four = (0..v4 as u32).map(|i| {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base4 + i * 512), 24).expect("valid prefix"))
    });
    let six = (0..v6 as u128).map(|i| {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base6 + ((2 * i) << 80)), 48).expect("valid prefix"))
    });
    four.chain(six).collect()
}

/// `list` with its first IPv4 range replaced by one no other range touches.
fn one_changed(list: &AllowList) -> AllowList {
    let mut changed = list.clone();
    let first = *changed.v4.iter().next().expect("every list has IPv4");
    changed.v4.remove(&first);
    changed.insert("15.0.0.0/24".parse().expect("static network"));
    changed
}

fn plain_text(list: &AllowList) -> String {
    let mut text = String::new();
    for net in list.iter() {
        text.push_str(&net.to_string());
        text.push('\n');
    }
    text
}

fn api_text(list: &AllowList) -> String {
    serde_json::json!({
        "result": {
            "ipv4_cidrs": list.strings(Family::V4),
            "ipv6_cidrs": list.strings(Family::V6),
            "etag": "38f79d050aa027e3be3865e495dcc9bc",
        },
        "success": true,
        "errors": [],
        "messages": [],
    })
    .to_string()
}

fn live(entries: AllowList) -> Live {
    Live {
        entries,
        structure: Structure::Current,
        warnings: Vec::new(),
    }
}

/// What `app` hands the planner on an ordinary run: both families, not degraded, the default
/// removal guard, no `--force`.
fn inputs<'a>(desired: &'a AllowList, live: &'a Live) -> Inputs<'a> {
    Inputs {
        desired,
        live,
        degraded: false,
        families: &Family::ALL,
        max_removal: 0.5,
        force: false,
    }
}

/// A remote plain list (`https://www.cloudflare.com/ips-v4`): special-purpose ranges refused.
#[divan::bench(args = SIZES)]
fn parse_plain_list(bencher: Bencher, n: usize) {
    let text = plain_text(&ranges(n));
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| parse_plain(black_box(&text), true).expect("valid list"));
}

/// A `file:` source: the same list, without the special-purpose checks remote lists get.
#[divan::bench(args = SIZES)]
fn parse_plain_local(bencher: Bencher, n: usize) {
    let text = plain_text(&ranges(n));
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| parse_plain(black_box(&text), false).expect("valid list"));
}

#[divan::bench(args = SIZES)]
fn parse_api_json(bencher: Bencher, n: usize) {
    let text = api_text(&ranges(n));
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| parse_api(black_box(&text)).expect("valid answer"));
}

#[divan::bench(args = SIZES)]
fn parse_cidr_each(bencher: Bencher, n: usize) {
    let strings: Vec<String> = ranges(n).iter().map(|net| net.to_string()).collect();
    bencher.counter(ItemsCount::new(n)).bench(|| {
        for s in black_box(&strings) {
            black_box(parse_cidr(s).expect("valid cidr"));
        }
    });
}

#[divan::bench(args = SIZES)]
fn aggregate(bencher: Bencher, n: usize) {
    let list = ranges(n);
    bencher
        .counter(ItemsCount::new(n))
        .bench(|| black_box(&list).aggregate());
}

/// `plan::plan`: the target, the diff and the guards, as a sync runs it.
mod plan_guarded {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn first_sync(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let absent = Live::absent();
        bencher.counter(ItemsCount::new(n)).bench(|| {
            let planned = plan(inputs(black_box(&desired), &absent)).expect("allowed");
            assert!(planned.plan.is_some());
            planned
        });
    }

    #[divan::bench(args = SIZES)]
    fn no_op(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let same = live(desired.clone());
        bencher.counter(ItemsCount::new(n)).bench(|| {
            let planned = plan(inputs(black_box(&desired), &same)).expect("allowed");
            assert!(planned.plan.is_none());
            planned
        });
    }

    #[divan::bench(args = SIZES)]
    fn one_range_changed(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let before = live(one_changed(&desired));
        bencher.counter(ItemsCount::new(n)).bench(|| {
            let planned = plan(inputs(black_box(&desired), &before)).expect("allowed");
            assert_eq!(planned.plan.as_ref().map(|p| p.add.len()), Some(1));
            planned
        });
    }
}

/// `Plan::new`: the diff alone.
mod plan_new {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn first_sync(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let absent = Live::absent();
        bencher
            .counter(ItemsCount::new(n))
            .bench(|| Plan::new(&absent, black_box(&desired)).expect("a change"));
    }

    #[divan::bench(args = SIZES)]
    fn no_op(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let same = live(desired.clone());
        bencher.counter(ItemsCount::new(n)).bench(|| {
            let p = Plan::new(&same, black_box(&desired));
            assert!(p.is_none());
            p
        });
    }

    #[divan::bench(args = SIZES)]
    fn one_range_changed(bencher: Bencher, n: usize) {
        let desired = ranges(n);
        let before = live(one_changed(&desired));
        bencher
            .counter(ItemsCount::new(n))
            .bench(|| Plan::new(&before, black_box(&desired)).expect("a change"));
    }
}
