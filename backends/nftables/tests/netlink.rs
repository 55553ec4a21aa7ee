//! The nfnetlink element path against the real kernel, each test in its own network namespace:
//! sets created with `nft -f`, elements written and read through `Nfnl`, cross-checked with
//! `nft -j list set`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use cfa_core::Family;
use cfa_nftables::netlink::{Nfnl, NlError};
use cfa_nftables::wire::{SetChange, SetContents, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;
use testkit::NetNs;

const TABLES: &str = "
table inet t {
    set s4 { type ipv4_addr; flags interval; }
    set s6 { type ipv6_addr; flags interval; }
}
table ip t4 {
    set s { type ipv4_addr; flags interval; }
}
table ip6 t6 {
    set s { type ipv6_addr; flags interval; }
}
";

/// A namespace with the test tables, and a socket in it.
fn setup(tag: &str) -> (NetNs, Nfnl) {
    let ns = NetNs::new(tag);
    nft_f(&ns, TABLES);
    let nl = Nfnl::open(Some(ns.name())).expect("open the socket in the namespace");
    (ns, nl)
}

/// Runs `nft -f -` with `script` in the namespace; returns how long it took.
fn nft_f(ns: &NetNs, script: &str) -> Duration {
    let started = Instant::now();
    let (ok, _, err) = ns.exec_input("nft", &["-f", "-"], script);
    assert!(ok, "nft -f failed: {err}");
    started.elapsed()
}

/// What `nft -j list set` says the set holds, as canonical CIDR strings (sorted) and ranges.
fn nft_list(ns: &NetNs, family: &str, table: &str, set: &str) -> (Vec<String>, Vec<String>) {
    let out = ns.exec_ok("nft", &["-j", "list", "set", family, table, set]);
    let json: Value = serde_json::from_str(&out).unwrap();
    let mut nets = Vec::new();
    let mut ranges = Vec::new();
    for item in json["nftables"].as_array().unwrap() {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            if let Some(addr) = e.as_str() {
                let bits = if addr.contains(':') { 128 } else { 32 };
                nets.push(format!("{addr}/{bits}").parse::<IpNet>().unwrap());
            } else if let Some(p) = e.get("prefix") {
                let net = format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]);
                nets.push(net.parse::<IpNet>().unwrap());
            } else if let Some(r) = e.get("range") {
                ranges.push(format!(
                    "{}-{}",
                    r[0].as_str().unwrap(),
                    r[1].as_str().unwrap()
                ));
            } else {
                panic!("unexpected element {e}");
            }
        }
    }
    nets.sort();
    (nets.iter().map(IpNet::to_string).collect(), ranges)
}

fn change(family: u8, table: &str, set: &str, key: Family) -> SetChange {
    SetChange {
        family,
        table: table.into(),
        set: set.into(),
        key,
        flush: false,
        remove: vec![],
        add: vec![],
    }
}

fn adding(set: &str, key: Family, add: &[IpNet]) -> SetChange {
    SetChange {
        add: add.to_vec(),
        ..change(NFPROTO_INET, "t", set, key)
    }
}

fn nets(items: &[&str]) -> Vec<IpNet> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

fn read(nl: &mut Nfnl, set: &str, key: Family) -> SetContents {
    nl.get_set(NFPROTO_INET, "t", set, key)
        .unwrap()
        .expect("the set exists")
}

/// xorshift64*: a seeded generator, so a failing size can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `count` non-overlapping CIDRs of `family`, ascending: a third adjacent to the one before,
/// some /32 or /128, and the last one touching the family's last address.
fn random_nets(rng: &mut Rng, family: Family, count: usize) -> Vec<IpNet> {
    let bits: u32 = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut out = Vec::with_capacity(count);
    // IPv4 prefixes stay long enough to fit 100,000 in 2^32.
    let min_len: u32 = match family {
        Family::V4 => 20,
        Family::V6 => 32,
    };
    let mut cursor: u128 = u128::from(rng.below(1 << 20)) << (bits - 24);
    while out.len() + 1 < count {
        let len = match rng.below(6) {
            0 => bits,
            _ => min_len + rng.below(u64::from(bits - min_len + 1)) as u32,
        };
        let size: u128 = 1u128 << (bits - len);
        // Align the cursor up to the prefix.
        let start = cursor.div_ceil(size) * size;
        out.push(make(family, start, len));
        cursor = start + size;
        if rng.below(3) != 0 {
            // A gap; in IPv4 bounded so that `count` networks fit below the last one.
            cursor += match family {
                Family::V4 => u128::from(rng.below((1u64 << 31) / count as u64)),
                Family::V6 => u128::from(rng.below(1 << 16)) << rng.below(90),
            };
        }
    }
    if count > 0 {
        // The last one reaches the last address.
        let len = bits - 8;
        let last = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        let start = last - ((1u128 << (bits - len)) - 1);
        assert!(cursor <= start, "generator overran the address space");
        out.push(make(family, start, len));
    }
    out
}

fn make(family: Family, start: u128, len: u32) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(start as u32), len as u8).unwrap()),
        Family::V6 => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(start), len as u8).unwrap()),
    }
}

/// Whether `b` starts right after `a` ends.
fn is_next(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => {
            u32::from(a.broadcast()).checked_add(1) == Some(u32::from(b.network()))
        }
        (IpNet::V6(a), IpNet::V6(b)) => {
            u128::from(a.broadcast()).checked_add(1) == Some(u128::from(b.network()))
        }
        _ => false,
    }
}

fn strings(nets: &[IpNet]) -> Vec<String> {
    let mut v = nets.to_vec();
    v.sort();
    v.iter().map(IpNet::to_string).collect()
}

#[test]
fn random_lists_round_trip_through_the_kernel() {
    let (ns, mut nl) = setup("nlround");
    let mut rng = Rng(0x5eed_cfa1);
    let mut sizes = vec![1usize, 2, 100_000];
    for _ in 0..3 {
        sizes.push(1 + rng.below(5_000) as usize);
    }
    sizes.push(20_000 + rng.below(30_000) as usize);
    for size in sizes {
        let v4 = random_nets(&mut rng, Family::V4, size);
        let v6 = random_nets(&mut rng, Family::V6, size);
        if size == 100_000 {
            // The generator does make the cases that matter.
            for list in [&v4, &v6] {
                let adjacent = list.windows(2).filter(|w| is_next(&w[0], &w[1])).count();
                let hosts = list
                    .iter()
                    .filter(|n| n.prefix_len() == n.max_prefix_len())
                    .count();
                assert!(
                    adjacent > 1_000 && hosts > 1_000,
                    "{adjacent} adjacent, {hosts} hosts"
                );
            }
        }
        nl.commit(
            &[adding("s4", Family::V4, &v4), adding("s6", Family::V6, &v6)],
            false,
        )
        .unwrap_or_else(|e| panic!("size {size}: {e}"));
        for (set, key, want) in [("s4", Family::V4, &v4), ("s6", Family::V6, &v6)] {
            let got = read(&mut nl, set, key);
            assert!(got.other.is_empty(), "size {size} {set}: {:?}", got.other);
            assert_eq!(got.nets.len(), want.len(), "size {size} {set}");
            assert!(got.nets == *want, "size {size} {set}: contents differ");
            if size <= 5_000 {
                let (listed, ranges) = nft_list(&ns, "inet", "t", set);
                assert!(ranges.is_empty(), "size {size} {set}: {ranges:?}");
                assert_eq!(listed, strings(want), "size {size} {set}: nft disagrees");
            }
        }
        let mut f4 = change(NFPROTO_INET, "t", "s4", Family::V4);
        f4.flush = true;
        let mut f6 = change(NFPROTO_INET, "t", "s6", Family::V6);
        f6.flush = true;
        nl.commit(&[f4, f6], false).unwrap();
        assert_eq!(read(&mut nl, "s4", Family::V4), SetContents::default());
        assert_eq!(read(&mut nl, "s6", Family::V6), SetContents::default());
    }
}

#[test]
fn ip_and_ip6_tables_work_too() {
    let (ns, mut nl) = setup("nlfam");
    let mut c4 = change(NFPROTO_IPV4, "t4", "s", Family::V4);
    c4.add = nets(&["10.0.0.0/24", "10.0.1.0/24", "255.255.255.255/32"]);
    let mut c6 = change(NFPROTO_IPV6, "t6", "s", Family::V6);
    c6.add = nets(&["2400:cb00::/32", "::1/128", "ffff:ffff::/32"]);
    nl.commit(&[c4.clone(), c6.clone()], false).unwrap();
    let got = nl.get_set(NFPROTO_IPV4, "t4", "s", Family::V4).unwrap();
    assert_eq!(got.unwrap().nets, c4.add);
    let got = nl.get_set(NFPROTO_IPV6, "t6", "s", Family::V6).unwrap();
    assert_eq!(
        got.unwrap().nets,
        nets(&["::1/128", "2400:cb00::/32", "ffff:ffff::/32"])
    );
    assert_eq!(
        nft_list(&ns, "ip", "t4", "s").0,
        ["10.0.0.0/24", "10.0.1.0/24", "255.255.255.255/32"]
    );
}

#[test]
fn replacing_a_range_by_its_halves_is_one_transaction() {
    let (ns, mut nl) = setup("nlrepl");
    let start = nets(&["103.21.244.0/22", "104.16.0.0/12", "172.64.0.0/13"]);
    nl.commit(&[adding("s4", Family::V4, &start)], false)
        .unwrap();
    // Adding the halves while the /12 is still there is refused: the deletion must come first.
    let halves = nets(&["104.16.0.0/13", "104.24.0.0/14"]);
    let err = nl
        .commit(&[adding("s4", Family::V4, &halves)], false)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("adding 104.16.0.0/13 to set inet t s4")
            || text.contains("adding 104.24.0.0/14 to set inet t s4"),
        "{text}"
    );
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, start);
    // In one batch, delete then add.
    let mut c = adding("s4", Family::V4, &halves);
    c.remove = nets(&["104.16.0.0/12"]);
    nl.commit(&[c], false).unwrap();
    let want = nets(&[
        "103.21.244.0/22",
        "104.16.0.0/13",
        "104.24.0.0/14",
        "172.64.0.0/13",
    ]);
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, want);
    assert_eq!(nft_list(&ns, "inet", "t", "s4").0, strings(&want));
}

#[test]
fn a_failing_batch_changes_nothing_and_names_each_failure() {
    let (_ns, mut nl) = setup("nlfail");
    let before = nets(&["10.0.0.0/24", "10.0.1.0/24", "192.0.2.0/24"]);
    nl.commit(&[adding("s4", Family::V4, &before)], false)
        .unwrap();
    let before6 = nets(&["2400:cb00::/32"]);
    nl.commit(&[adding("s6", Family::V6, &before6)], false)
        .unwrap();
    for check_only in [false, true] {
        // A valid addition, an overlapping one, a missing deletion, and a valid change of
        // another set: all refused together.
        let mut c4 = adding(
            "s4",
            Family::V4,
            &nets(&["198.51.100.0/24", "10.0.0.128/25", "203.0.113.0/24"]),
        );
        c4.remove = nets(&["10.9.9.0/24"]);
        let c6 = adding("s6", Family::V6, &nets(&["2606:4700::/32"]));
        let err = nl.commit(&[c4, c6], check_only).unwrap_err();
        let NlError::Rejected {
            check_only: was_check,
            failures,
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*was_check, check_only);
        let text = err.to_string();
        assert_eq!(failures.len(), 2, "{text}");
        assert_eq!(
            failures[0].what, "deleting 10.9.9.0/24 from set inet t s4",
            "{text}"
        );
        assert_eq!(failures[0].errno, 2, "{text}");
        assert_eq!(
            failures[1].what, "adding 10.0.0.128/25 to set inet t s4",
            "{text}"
        );
        println!("check_only={check_only}: {text}");
        assert_eq!(read(&mut nl, "s4", Family::V4).nets, before);
        assert_eq!(read(&mut nl, "s6", Family::V6).nets, before6);
    }
}

#[test]
fn check_only_validates_and_changes_nothing() {
    let (ns, mut nl) = setup("nlcheck");
    let before = nets(&["10.0.0.0/24"]);
    nl.commit(&[adding("s4", Family::V4, &before)], false)
        .unwrap();
    let mut c = adding("s4", Family::V4, &nets(&["10.0.0.0/25", "10.0.0.128/25"]));
    c.remove = before.clone();
    nl.commit(std::slice::from_ref(&c), true).unwrap();
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, before);
    assert_eq!(nft_list(&ns, "inet", "t", "s4").0, ["10.0.0.0/24"]);
    // A dry run of a change to a set that does not exist fails, naming it.
    let err = nl
        .commit(&[adding("nope", Family::V4, &before)], true)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("adding 10.0.0.0/24 to set inet t nope: No such file or directory"),
        "{err}"
    );
    // The real thing still applies.
    nl.commit(&[c], false).unwrap();
    assert_eq!(
        read(&mut nl, "s4", Family::V4).nets,
        nets(&["10.0.0.0/25", "10.0.0.128/25"])
    );
}

#[test]
fn flush_then_refill_in_one_batch() {
    let (_ns, mut nl) = setup("nlflush");
    nl.commit(
        &[adding(
            "s4",
            Family::V4,
            &nets(&["10.0.0.0/24", "10.1.0.0/16"]),
        )],
        false,
    )
    .unwrap();
    // The refill overlaps what was there: only a flush before it makes that possible.
    let mut c = adding("s4", Family::V4, &nets(&["10.0.0.0/8"]));
    c.flush = true;
    nl.commit(&[c], false).unwrap();
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, nets(&["10.0.0.0/8"]));
}

#[test]
fn what_nft_wrote_reads_back_including_foreign_ranges() {
    let (_ns, mut nl) = setup("nlforeign");
    // nft adds its leading interval end at 0.0.0.0; a range that is not a CIDR is reported.
    nft_f(
        &_ns,
        "add element inet t s4 { 10.0.1.0/24, 10.0.2.0/24, 10.0.0.1-10.0.0.5, 255.255.255.0/24 }",
    );
    let got = read(&mut nl, "s4", Family::V4);
    assert_eq!(
        got.nets,
        nets(&["10.0.1.0/24", "10.0.2.0/24", "255.255.255.0/24"])
    );
    assert_eq!(got.other, ["10.0.0.1-10.0.0.5"]);
    // Our own deletions remove nft's elements (the zero end stays, meaning nothing).
    let mut c = change(NFPROTO_INET, "t", "s4", Family::V4);
    c.remove = nets(&["10.0.1.0/24", "255.255.255.0/24"]);
    nl.commit(&[c], false).unwrap();
    let got = read(&mut nl, "s4", Family::V4);
    assert_eq!(got.nets, nets(&["10.0.2.0/24"]));
}

#[test]
fn absent_tables_and_sets_read_as_none() {
    let (_ns, mut nl) = setup("nlabsent");
    assert_eq!(
        nl.get_set(NFPROTO_INET, "no_such_table", "s4", Family::V4)
            .unwrap(),
        None
    );
    assert_eq!(
        nl.get_set(NFPROTO_INET, "t", "no_such_set", Family::V4)
            .unwrap(),
        None
    );
    // The socket is in the namespace: the host's own ruleset (only read here) has no table t of
    // ours, and reading a set of a table it lacks is None as well.
    let mut host = Nfnl::open(None).unwrap();
    let name = format!("cfa_nl_absent_{}", std::process::id());
    assert_eq!(
        host.get_set(NFPROTO_INET, &name, "s4", Family::V4).unwrap(),
        None
    );
    // A set of the other family reads as foreign keys, not as networks.
    nl.commit(
        &[adding("s6", Family::V6, &nets(&["2400:cb00::/32"]))],
        false,
    )
    .unwrap();
    let got = read(&mut nl, "s6", Family::V4);
    assert!(got.nets.is_empty());
    assert_eq!(got.other.len(), 2, "{:?}", got.other);
}

#[test]
fn a_missing_namespace_is_a_clear_error() {
    testkit::require_root();
    let name = format!("cfa-no-such-ns-{}", std::process::id());
    let err = Nfnl::open(Some(&name)).unwrap_err();
    assert!(matches!(err, NlError::Netns { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("entering network namespace {name} (/run/netns/{name}): No such file or directory (os error 2)")
    );
}

/// Peak resident set of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[test]
fn measure_60k_ranges() {
    // Timings are printed (run with --nocapture), not asserted.
    let (ns, mut nl) = setup("nlmeasure");
    let v4: Vec<IpNet> = (0..50_000u32)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap()))
        .collect();
    let v6: Vec<IpNet> = (0..10_000u128)
        .map(|i| {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from((0x2a00u128 << 112) + (i << 80)), 48).unwrap())
        })
        .collect();
    let rss0 = peak_rss_mib();
    let t = Instant::now();
    nl.commit(
        &[adding("s4", Family::V4, &v4), adding("s6", Family::V6, &v6)],
        false,
    )
    .unwrap();
    let commit = t.elapsed();
    let t = Instant::now();
    let got4 = read(&mut nl, "s4", Family::V4);
    let got6 = read(&mut nl, "s6", Family::V6);
    let dump = t.elapsed();
    assert_eq!(got4.nets, v4);
    assert_eq!(got6.nets, v6);
    let t = Instant::now();
    let mut c = change(NFPROTO_INET, "t", "s4", Family::V4);
    c.remove = vec![v4[25_000]];
    c.add = nets(&["11.97.168.0/25", "11.97.168.128/25"]);
    assert_eq!(v4[25_000].to_string(), "11.97.168.0/24");
    nl.commit(&[c], false).unwrap();
    let replace = t.elapsed();
    let rss1 = peak_rss_mib();

    // The same 60,000 elements with nft -f into fresh sets, and nft's listing of them.
    let mut script = String::from(
        "table inet n {\n set s4 { type ipv4_addr; flags interval; }\n set s6 { type ipv6_addr; flags interval; }\n}\n",
    );
    let join = |v: &[IpNet]| {
        v.iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    script.push_str(&format!("add element inet n s4 {{ {} }}\n", join(&v4)));
    script.push_str(&format!("add element inet n s6 {{ {} }}\n", join(&v6)));
    let nft_commit = nft_f(&ns, &script);
    let t = Instant::now();
    ns.exec_ok("nft", &["-j", "list", "table", "inet", "n"]);
    let nft_list = t.elapsed();
    let nft_replace = nft_f(
        &ns,
        "delete element inet n s4 { 11.97.168.0/24 }\nadd element inet n s4 { 11.97.168.0/25, 11.97.168.128/25 }\n",
    );
    println!(
        "60,000 ranges (50k v4 /24 + 10k v6 /48): netlink commit {:.3}s, read back {:.3}s, replace one {:.4}s \
         (peak RSS of this test process {rss0:.0} -> {rss1:.0} MiB); \
         nft -f {:.3}s, nft -j list table {:.3}s, nft -f replace one {:.3}s",
        commit.as_secs_f64(),
        dump.as_secs_f64(),
        replace.as_secs_f64(),
        nft_commit.as_secs_f64(),
        nft_list.as_secs_f64(),
        nft_replace.as_secs_f64(),
    );
}

#[test]
fn adding_what_is_there_is_a_no_op_and_deleting_part_of_a_range_fails() {
    let (_ns, mut nl) = setup("nlidem");
    let list = nets(&["10.0.0.0/24", "255.255.255.255/32"]);
    nl.commit(&[adding("s4", Family::V4, &list)], false)
        .unwrap();
    // Like `nft add element` (no NLM_F_EXCL): an element already present is not an error.
    nl.commit(&[adding("s4", Family::V4, &list)], false)
        .unwrap();
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, list);
    // The elements of 10.0.0.0/25 are not both in the set: refused, naming the range.
    let mut c = change(NFPROTO_INET, "t", "s4", Family::V4);
    c.remove = nets(&["10.0.0.0/25"]);
    let err = nl.commit(&[c], false).unwrap_err();
    assert!(
        err.to_string()
            .contains("deleting 10.0.0.0/25 from set inet t s4: No such file or directory"),
        "{err}"
    );
    assert_eq!(read(&mut nl, "s4", Family::V4).nets, list);
}
