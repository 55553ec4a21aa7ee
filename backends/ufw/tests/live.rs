//! The ufw backend against the real ufw, each test in its own network namespace with its own
//! copy of the stock `/etc/ufw` and `/etc/default` under `/etc/netns/NS/`.
//!
//! ufw takes `/run/ufw.lock` (not under `/etc`, so shared by every namespace) around each
//! command: tests running in parallel serialise their ufw calls there, and never collide.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use cfa_core::{
    AllowList, Backend, BackendError, Family, Plan, Protocol, RuleSpec, Runner, Structure,
};
use cfa_ufw::tuple::parse_rules;
use cfa_ufw::{is_active, UfwBackend, UfwOptions};
use testkit::tcp::{connect, Lab};
use testkit::NetNs;

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

/// A namespace with its own ufw configuration.
struct Ufw {
    ns: NetNs,
}

impl Ufw {
    fn new(tag: &str, enable: bool, ipv6: bool) -> Ufw {
        testkit::require_root();
        let ns = NetNs::new(tag);
        ns.overlay_etc(&["ufw", "default"]);
        let etc = ns.etc();
        if !ipv6 {
            let path = etc.join("default/ufw");
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("\nIPV6=yes\n"),
                "stock defaults have IPV6=yes"
            );
            fs::write(&path, text.replace("\nIPV6=yes\n", "\nIPV6=no\n")).unwrap();
        }
        if enable {
            ns.exec_ok("ufw", &["--force", "enable"]);
        }
        Ufw { ns }
    }

    fn dir(&self) -> PathBuf {
        self.ns.etc().join("ufw")
    }

    fn backend(&self, spec: RuleSpec) -> UfwBackend {
        UfwBackend::new(
            UfwOptions {
                dir: self.dir(),
                defaults_file: self.ns.etc().join("default/ufw"),
                ..UfwOptions::default()
            },
            spec,
            Runner::in_netns(self.ns.name()),
        )
    }

    fn ufw(&self, args: &[&str]) -> String {
        self.ns.exec_ok("ufw", args)
    }

    /// Contents and modification time of both rules files.
    fn files(&self) -> Vec<(Vec<u8>, i64, i64)> {
        ["user.rules", "user6.rules"]
            .iter()
            .map(|f| {
                let p = self.dir().join(f);
                let m = fs::metadata(&p).unwrap();
                (fs::read(&p).unwrap(), m.mtime(), m.mtime_nsec())
            })
            .collect()
    }

    fn tuples(&self, file: &str) -> Vec<String> {
        let text = fs::read_to_string(self.dir().join(file)).unwrap();
        parse_rules(&text, file == "user6.rules")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The rules in the kernel's `ufw-user-input` chain (or `ufw6-`), as `iptables-save` shows.
    fn kernel(&self, v6: bool) -> Vec<String> {
        let (tool, chain) = if v6 {
            ("ip6tables-save", "-A ufw6-user-input ")
        } else {
            ("iptables-save", "-A ufw-user-input ")
        };
        let out = self.ns.exec_ok(tool, &["-t", "filter"]);
        out.lines()
            .filter(|l| l.starts_with(chain))
            .map(String::from)
            .collect()
    }
}

/// One engine run: read, plan, check, apply, read back.
fn sync(b: &UfwBackend, desired: &AllowList) -> Option<Plan> {
    let live = b.read().unwrap();
    let plan = Plan::new(&live, desired)?;
    b.check(&plan).unwrap();
    b.apply(&plan).unwrap();
    let after = b.read().unwrap();
    assert_eq!(after.structure, Structure::Current, "after applying {plan}");
    assert_eq!(&after.entries, desired);
    Some(plan)
}

fn kernel_sources(rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| {
            let mut it = r.split_whitespace();
            it.by_ref().find(|w| *w == "-s")?;
            it.next().map(String::from)
        })
        .collect()
}

#[test]
fn first_sync_is_live_and_the_second_touches_nothing() {
    let u = Ufw::new("ufwfirst", true, true);
    let b = u.backend(RuleSpec::default());
    assert_eq!(b.name(), "ufw");
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Absent);
    assert!(live.warnings.is_empty(), "{:?}", live.warnings);
    let cf = cloudflare();
    let plan = sync(&b, &cf).expect("first sync changes");
    assert_eq!(plan.add.len(), 22);

    // Live in the namespace's kernel, one multiport rule per range.
    let v4 = u.kernel(false);
    let v6 = u.kernel(true);
    assert_eq!(v4.len(), 15, "{v4:#?}");
    assert_eq!(v6.len(), 7, "{v6:#?}");
    assert!(v4
        .iter()
        .all(|r| r.contains("-p tcp -m multiport --dports 80,443") && r.ends_with("-j ACCEPT")));
    let mut sources = kernel_sources(&v4);
    sources.extend(kernel_sources(&v6));
    sources.sort();
    let mut want = cf.strings(Family::V4);
    want.extend(cf.strings(Family::V6));
    want.sort();
    assert_eq!(sources, want);

    // No-op: nothing planned, both files untouched (same bytes, same mtime).
    let before = u.files();
    assert!(sync(&b, &cf).is_none());
    assert_eq!(u.files(), before);
    assert_eq!(u.kernel(false), v4);
}

#[test]
fn changed_list_adds_and_deletes_only_the_difference() {
    let u = Ufw::new("ufwchg", true, true);
    let b = u.backend(RuleSpec::default());
    let old = list(&[
        "173.245.48.0/20",
        "103.21.244.0/22",
        "104.16.0.0/12",
        "2400:cb00::/32",
    ]);
    sync(&b, &old);
    let new = list(&[
        "173.245.48.0/20",
        "103.21.244.0/22",
        "104.16.0.0/13",
        "104.24.0.0/14",
        "2400:cb00::/32",
        "2405:b500::/32",
    ]);
    let plan = sync(&b, &new).unwrap();
    assert_eq!(
        plan.add,
        list(&["104.16.0.0/13", "104.24.0.0/14", "2405:b500::/32"])
    );
    assert_eq!(plan.remove, list(&["104.16.0.0/12"]));
    // The ranges that stayed kept their rules (and their place); the new ones came last.
    let v4 = u.tuples("user.rules");
    assert_eq!(v4.len(), 4);
    assert!(v4[0].contains(" 103.21.244.0/22 "), "{v4:#?}");
    assert!(v4[1].contains(" 173.245.48.0/20 "), "{v4:#?}");
    assert_eq!(
        kernel_sources(&u.kernel(false)),
        [
            "103.21.244.0/22",
            "173.245.48.0/20",
            "104.16.0.0/13",
            "104.24.0.0/14"
        ]
    );
}

#[test]
fn operator_rules_on_the_same_ranges_are_kept_through_sync_and_purge() {
    let u = Ufw::new("ufwoper", true, true);
    u.ufw(&["allow", "22/tcp"]);
    u.ufw(&["allow", "from", "173.245.48.0/20"]);
    u.ufw(&[
        "allow",
        "proto",
        "tcp",
        "from",
        "173.245.48.0/20",
        "to",
        "any",
        "port",
        "22",
        "comment",
        "ssh from cf",
    ]);
    u.ufw(&[
        "deny",
        "proto",
        "tcp",
        "from",
        "2400:cb00::/32",
        "to",
        "any",
        "port",
        "8080",
    ]);
    // Same ports and range as ours but udp: a different rule for ufw.
    u.ufw(&[
        "allow",
        "proto",
        "udp",
        "from",
        "103.21.244.0/22",
        "to",
        "any",
        "port",
        "80,443",
    ]);
    let ops_v4 = u.tuples("user.rules");
    let ops_v6 = u.tuples("user6.rules");
    let b = u.backend(RuleSpec::default());
    assert_eq!(b.read().unwrap().structure, Structure::Absent);
    let cf = cloudflare();
    sync(&b, &cf);
    let v4 = u.tuples("user.rules");
    assert_eq!(
        &v4[..ops_v4.len()],
        &ops_v4[..],
        "operator rules first, unchanged"
    );
    assert_eq!(v4.len(), ops_v4.len() + 15);
    b.purge().unwrap();
    assert_eq!(u.tuples("user.rules"), ops_v4);
    assert_eq!(u.tuples("user6.rules"), ops_v6);
    assert_eq!(b.read().unwrap().structure, Structure::Absent);
}

#[test]
fn an_operator_rule_ufw_would_merge_with_ours_is_refused_untouched() {
    let u = Ufw::new("ufwclash", true, true);
    // ufw counts this and ours as one rule (they differ only in the comment): adding ours would
    // re-comment the operator's rule, and a later purge would delete it.
    u.ufw(&[
        "allow",
        "proto",
        "tcp",
        "from",
        "173.245.48.0/20",
        "to",
        "any",
        "port",
        "80,443",
    ]);
    let before = u.files();
    let b = u.backend(RuleSpec::default());
    let live = b.read().unwrap();
    let plan = Plan::new(&live, &cloudflare()).unwrap();
    for result in [b.check(&plan), b.apply(&plan)] {
        match result {
            Err(BackendError::Conflict(m)) => assert!(m.contains("173.245.48.0/20"), "{m}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(u.files(), before, "nothing was written");
}

#[test]
fn inactive_ufw_keeps_the_rules_in_its_files_and_says_so() {
    let u = Ufw::new("ufwoff", false, true);
    let b = u.backend(RuleSpec::default());
    assert!(!is_active(&Runner::in_netns(u.ns.name())));
    let live = b.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains("ufw is inactive")),
        "{:?}",
        live.warnings
    );
    let cf = cloudflare();
    sync(&b, &cf);
    assert!(
        u.ufw(&["status"]).starts_with("Status: inactive"),
        "never enabled"
    );
    assert_eq!(u.tuples("user.rules").len(), 15);
    assert_eq!(u.tuples("user6.rules").len(), 7);
    // Once the operator enables ufw the rules are live.
    u.ufw(&["--force", "enable"]);
    assert!(is_active(&Runner::in_netns(u.ns.name())));
    assert_eq!(u.kernel(false).len(), 15);
    assert_eq!(u.kernel(true).len(), 7);
    assert!(b.read().unwrap().warnings.is_empty());
}

#[test]
fn ipv6_off_skips_the_ipv6_ranges_with_a_warning() {
    let u = Ufw::new("ufwno6", true, false);
    let b = u.backend(RuleSpec::default());
    assert_eq!(b.effective_families().unwrap(), vec![Family::V4]);
    let live = b.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains("IPV6=no")),
        "{:?}",
        live.warnings
    );
    let v6_before = fs::read(u.dir().join("user6.rules")).unwrap();
    let cf = cloudflare();
    let plan = Plan::new(&live, &cf).unwrap();
    b.apply(&plan).unwrap();
    let after = b.read().unwrap();
    assert_eq!(after.entries, cf.only(&[Family::V4]));
    assert_eq!(after.structure, Structure::Current);
    assert_eq!(fs::read(u.dir().join("user6.rules")).unwrap(), v6_before);
    assert_eq!(u.kernel(false).len(), 15);
    // With the families ufw really manages, the next run is a no-op.
    let desired = cf.only(&b.effective_families().unwrap());
    assert!(Plan::new(&after, &desired).is_none());
}

/// Clears the immutable flag even when the test fails, so the namespace's overlay can go.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Immutable {
        let st = Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "chattr +i {}", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_failure_part_way_leaves_the_rules_as_they_were() {
    let u = Ufw::new("ufwfail", true, true);
    u.ufw(&["allow", "22/tcp"]);
    let b = u.backend(RuleSpec::default());
    sync(
        &b,
        &list(&[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "103.22.200.0/22",
            "2400:cb00::/32",
        ]),
    );
    u.ufw(&["allow", "5432/tcp"]);
    let files = u.files();
    let kernel = (u.kernel(false), u.kernel(true));
    let live = b.read().unwrap();
    // Adds one IPv4 range (undone by a delete), deletes an IPv4 range in the middle (undone by
    // `ufw insert` at its old place), then fails deleting the IPv6 range: ufw cannot write
    // user6.rules.
    let desired = list(&["173.245.48.0/20", "103.22.200.0/22", "104.16.0.0/13"]);
    let plan = Plan::new(&live, &desired).unwrap();
    let err = {
        let _guard = Immutable::set(u.dir().join("user6.rules"));
        b.apply(&plan).unwrap_err()
    };
    let msg = err.to_string();
    assert!(msg.contains("2400:cb00::/32"), "{msg}");
    assert!(msg.contains("is not writable"), "ufw's own output: {msg}");
    assert!(
        msg.contains("the 2 step(s) already applied were undone"),
        "{msg}"
    );
    let after = u.files();
    assert_eq!(
        String::from_utf8_lossy(&after[0].0),
        String::from_utf8_lossy(&files[0].0),
        "user.rules restored byte for byte"
    );
    assert_eq!(after[1], files[1]);
    assert_eq!((u.kernel(false), u.kernel(true)), kernel);
    assert_eq!(b.read().unwrap(), live);
}

#[test]
fn purge_removes_exactly_our_rules_and_is_idempotent() {
    let u = Ufw::new("ufwpurge", true, true);
    u.ufw(&["allow", "22/tcp"]);
    let ops = (u.tuples("user.rules"), u.tuples("user6.rules"));
    let b = u.backend(RuleSpec::default());
    sync(&b, &cloudflare());
    b.purge().unwrap();
    assert_eq!((u.tuples("user.rules"), u.tuples("user6.rules")), ops);
    assert_eq!(kernel_sources(&u.kernel(false)), Vec::<String>::new());
    assert_eq!(u.kernel(false).len(), 1, "the operator's 22/tcp stays live");
    let files = u.files();
    b.purge().unwrap();
    assert_eq!(u.files(), files, "a second purge writes nothing");
    assert!(!b.read().unwrap().is_present());
}

#[test]
fn all_ports_both_protocols_and_a_spec_change_rebuild_our_rules() {
    let u = Ufw::new("ufwspec", true, true);
    let both = RuleSpec {
        ports: vec![],
        protocol: Protocol::Both,
        ..RuleSpec::default()
    };
    let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    let b = u.backend(both);
    sync(&b, &desired);
    let mut lines = u.tuples("user.rules");
    lines.extend(u.tuples("user6.rules"));
    insta::assert_snapshot!("both_protocols_all_ports", lines.join("\n"));
    assert!(sync(&b, &desired).is_none());

    // The configuration goes back to tcp 443,80: our rules are outdated and rebuilt.
    let tcp = u.backend(RuleSpec {
        ports: vec![443, 80],
        ..RuleSpec::default()
    });
    let live = tcp.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("173.245.48.0/20")),
        "{:?}",
        live.structure
    );
    // Outdated rules still let their ranges in: they are live entries.
    assert_eq!(live.entries, desired);
    sync(&tcp, &desired);
    let mut lines = u.tuples("user.rules");
    lines.extend(u.tuples("user6.rules"));
    insta::assert_snapshot!("tcp_80_443", lines.join("\n"));
    assert!(sync(&tcp, &desired).is_none());
}

#[test]
fn every_captured_rule_shape_round_trips_through_the_real_ufw() {
    // The commands we derive from a tuple (used to delete or restore rules) make ufw write that
    // same tuple back.
    let u = Ufw::new("ufwround", true, true);
    let v4 = include_str!("fixtures/mixed-user.rules");
    let v6 = include_str!("fixtures/mixed-user6.rules");
    let mut rules = parse_rules(v4, false).unwrap();
    rules.extend(parse_rules(v6, true).unwrap());
    for rule in &rules {
        let args = rule.cli_args(&[]).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        u.ufw(&args);
    }
    let lines = |text: &str, v6| -> Vec<String> {
        parse_rules(text, v6)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(u.tuples("user.rules"), lines(v4, false));
    assert_eq!(u.tuples("user6.rules"), lines(v6, true));
}

fn restricted(spec: RuleSpec) -> RuleSpec {
    RuleSpec {
        restrict: true,
        ..spec
    }
}

/// Our rules in one rules file: (action, source) in ufw's order.
fn ours(u: &Ufw, file: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(u.dir().join(file)).unwrap();
    parse_rules(&text, file == "user6.rules")
        .unwrap()
        .into_iter()
        .filter(|t| t.has_comment("cf-allowlist"))
        .map(|t| (t.action, t.src))
        .collect()
}

fn strangers_blocked(client: &NetNs, port: u16) -> bool {
    Lab::STRANGERS
        .iter()
        .all(|(src, dst)| connect(client, src, dst, port) == "timeout")
}

#[test]
fn restrict_drops_strangers_with_a_deny_after_our_allows() {
    let u = Ufw::new("ufwrst", false, true);
    let client = NetNs::new("ufwrstc");
    let _lab = Lab::new(&u.ns, &client, &[443]);
    // With an ACCEPT policy only our deny rule keeps strangers out.
    u.ufw(&["default", "allow", "incoming"]);
    u.ufw(&["--force", "enable"]);
    let (v4_ok, v6_ok) = (Lab::ALLOWED[0], Lab::ALLOWED[1]);
    assert_eq!(connect(&client, v4_ok.0, v4_ok.1, 443), "ok");
    assert!(!strangers_blocked(&client, 443), "open before the sync");

    let b = u.backend(restricted(RuleSpec::default()));
    let mut desired = list(&["173.245.48.0/20", Lab::ALLOWED_NETS[0], "2400:cb00::/32"]);
    sync(&b, &desired);
    assert_eq!(connect(&client, v4_ok.0, v4_ok.1, 443), "ok", "allowlisted");
    assert_eq!(
        connect(&client, v6_ok.0, v6_ok.1, 443),
        "timeout",
        "not on the list yet"
    );
    assert!(strangers_blocked(&client, 443));
    assert_eq!(ours(&u, "user6.rules").last().unwrap().0, "deny");

    // The operator opens 443 to everyone: appended after our deny, which shadows it.
    u.ufw(&["allow", "443/tcp"]);
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert!(
        live.warnings
            .iter()
            .any(|w| w.contains("`443/tcp ALLOW Anywhere`")
                && w.contains("come after cf-allowlist's deny rule")),
        "{:?}",
        live.warnings
    );
    assert!(strangers_blocked(&client, 443));

    // A new range goes in before our deny: it connects, and the deny stays last among ours.
    desired.insert(Lab::ALLOWED_NETS[1].parse().unwrap());
    sync(&b, &desired);
    assert_eq!(
        connect(&client, v6_ok.0, v6_ok.1, 443),
        "ok",
        "inserted before the deny"
    );
    assert!(strangers_blocked(&client, 443));
    assert_eq!(
        ours(&u, "user6.rules"),
        [
            ("allow".to_string(), "2400:cb00::/32".to_string()),
            ("allow".to_string(), "2001:db8:1::/64".to_string()),
            ("deny".to_string(), "::/0".to_string()),
        ]
    );
    let v6 = u.tuples("user6.rules");
    assert!(
        v6.last().unwrap().contains(" 443 ::/0 any ::/0 in"),
        "the operator's rule stays last: {v6:#?}"
    );

    // Our deny deleted by hand: re-created.
    u.ufw(&[
        "delete", "deny", "proto", "tcp", "from", "any", "to", "any", "port", "80,443",
    ]);
    assert!(!strangers_blocked(&client, 443));
    let live = b.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("restrict: true cannot hold") && why.contains("`ufw delete allow 443/tcp`")),
        "the operator's rule now comes before the deny we would add: {:?}",
        live.structure
    );
    let plan = Plan::new(&live, &desired).unwrap();
    let before = u.files();
    for result in [b.check(&plan), b.apply(&plan)] {
        match result {
            Err(BackendError::Conflict(m)) => {
                assert!(m.contains("`443/tcp ALLOW Anywhere` and `443/tcp (v6) ALLOW Anywhere (v6)` (`ufw delete allow 443/tcp`)"), "{m}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(u.files(), before, "nothing was written");
    // Doing what the message says makes it work.
    u.ufw(&["delete", "allow", "443/tcp"]);
    sync(&b, &desired);
    assert!(strangers_blocked(&client, 443));
    for (src, dst) in Lab::ALLOWED {
        assert_eq!(connect(&client, src, dst, 443), "ok", "allowlisted {src}");
    }

    // restrict turned off: our deny goes, with a warning that nothing restricts now.
    let open = u.backend(RuleSpec::default());
    let live = open.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("restrict: false")),
        "{:?}",
        live.structure
    );
    sync(&open, &desired);
    assert!(ours(&u, "user.rules").iter().all(|(a, _)| a == "allow"));
    assert!(ours(&u, "user6.rules").iter().all(|(a, _)| a == "allow"));
    assert!(!strangers_blocked(&client, 443));
    assert!(
        open.read().unwrap().warnings.iter().any(|w| w
            .contains("the allowlist does not restrict: ufw's default incoming policy is ACCEPT")),
        "policy warning"
    );

    // Back on, then purged: everything of ours goes, strangers are back.
    sync(&b, &desired);
    assert!(strangers_blocked(&client, 443));
    b.purge().unwrap();
    assert!(ours(&u, "user.rules").is_empty() && ours(&u, "user6.rules").is_empty());
    for (src, dst) in Lab::STRANGERS {
        assert_eq!(connect(&client, src, dst, 443), "ok", "after purge {src}");
    }
}

#[test]
fn restrict_is_refused_while_an_app_profile_opens_the_ports_first() {
    let u = Ufw::new("ufwapp", true, true);
    fs::write(
        u.dir().join("applications.d/nginx"),
        "[Nginx Full]\ntitle=Web Server (Nginx, HTTP + HTTPS)\ndescription=Nginx\nports=80,443/tcp\n",
    )
    .unwrap();
    u.ufw(&["allow", "Nginx Full"]);
    // Without restrict: a warning that the allowlist does not restrict.
    let open = u.backend(RuleSpec::default());
    let live = open.read().unwrap();
    assert_eq!(
        live.warnings,
        [
            "the allowlist does not restrict: the ufw rule(s) `Nginx Full ALLOW Anywhere` and \
          `Nginx Full (v6) ALLOW Anywhere (v6)` (`ufw delete allow 'Nginx Full'`) let every \
          source reach port 80,443 over tcp (restrict: false)"
        ]
    );
    let b = u.backend(restricted(RuleSpec::default()));
    let before = u.files();
    let live = b.read().unwrap();
    let plan = Plan::new(&live, &list(&["173.245.48.0/20"])).unwrap();
    for result in [b.check(&plan), b.apply(&plan)] {
        match result {
            Err(BackendError::Conflict(m)) => assert!(
                m.contains("`Nginx Full ALLOW Anywhere`")
                    && m.contains("`ufw delete allow 'Nginx Full'`"),
                "{m}"
            ),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(u.files(), before, "nothing was written");
    u.ufw(&["delete", "allow", "Nginx Full"]);
    sync(&b, &list(&["173.245.48.0/20"]));
}

#[test]
fn restrict_inserts_land_where_ufws_numbering_says_with_multi_protocol_apps() {
    // CIFS is two tuples per family (udp and tcp) that ufw numbers as one rule.
    let u = Ufw::new("ufwnum", true, true);
    u.ufw(&["allow", "from", "10.0.0.0/8", "to", "any", "app", "CIFS"]);
    u.ufw(&["allow", "from", "fd00::/8", "to", "any", "app", "CIFS"]);
    let b = u.backend(restricted(RuleSpec::default()));
    sync(&b, &list(&["173.245.48.0/20", "2400:cb00::/32"]));
    let desired = list(&[
        "173.245.48.0/20",
        "103.21.244.0/22",
        "104.16.0.0/13",
        "2400:cb00::/32",
        "2606:4700::/32",
    ]);
    sync(&b, &desired);
    let sources = |file| {
        ours(&u, file)
            .into_iter()
            .map(|(a, s)| format!("{a} {s}"))
            .collect::<Vec<_>>()
    };
    let v4 = sources("user.rules");
    assert_eq!(v4.len(), 4, "{v4:?}");
    assert_eq!(v4.last().unwrap(), "deny 0.0.0.0/0", "{v4:?}");
    assert_eq!(sources("user6.rules").last().unwrap(), "deny ::/0");
    // The operator's tuples are untouched, first.
    assert!(
        u.tuples("user.rules")[0].contains("CIFS") && u.tuples("user.rules")[1].contains("CIFS")
    );
    assert!(u.tuples("user6.rules")[1].contains("CIFS"));
    b.purge().unwrap();
    assert_eq!(u.tuples("user.rules").len(), 2);
}

#[test]
fn a_failed_insert_with_restrict_is_undone() {
    let u = Ufw::new("ufwrfail", true, true);
    let b = u.backend(restricted(RuleSpec::default()));
    sync(&b, &list(&["173.245.48.0/20", "2400:cb00::/32"]));
    u.ufw(&["allow", "22/tcp"]);
    let files = u.files();
    let live = b.read().unwrap();
    let plan = Plan::new(
        &live,
        &list(&[
            "173.245.48.0/20",
            "104.16.0.0/13",
            "2400:cb00::/32",
            "2606:4700::/32",
        ]),
    )
    .unwrap();
    let err = {
        let _guard = Immutable::set(u.dir().join("user6.rules"));
        b.apply(&plan).unwrap_err()
    };
    let msg = err.to_string();
    assert!(
        msg.contains("ufw insert") && msg.contains("2606:4700::/32"),
        "{msg}"
    );
    assert!(
        msg.contains("the 1 step(s) already applied were undone"),
        "{msg}"
    );
    assert_eq!(
        String::from_utf8_lossy(&u.files()[0].0),
        String::from_utf8_lossy(&files[0].0),
        "user.rules restored byte for byte"
    );
    assert_eq!(b.read().unwrap(), live);
}

#[test]
fn a_degraded_run_after_a_ports_change_keeps_every_live_range() {
    let u = Ufw::new("ufwdeg", true, true);
    let old = list(&[
        "173.245.48.0/20",
        "103.21.244.0/22",
        "104.16.0.0/13",
        "2400:cb00::/32",
    ]);
    sync(&u.backend(RuleSpec::default()), &old);
    // The configuration now says 443 only, and the source is unreachable: the cache (here a
    // list with one range) serves, add-only, as the engine does it.
    let b = u.backend(RuleSpec {
        ports: vec![443],
        ..RuleSpec::default()
    });
    let live = b.read().unwrap();
    assert_eq!(live.entries, old, "rules of the old shape are live entries");
    assert!(matches!(live.structure, Structure::Outdated(_)));
    let cache = list(&["104.16.0.0/13"]);
    let target = cache.union(&live.entries).aggregate();
    let plan = Plan::new(&live, &target).unwrap();
    assert_eq!(plan.before.len(), 4, "the shrink guard counts them");
    assert!(plan.remove.is_empty());
    b.check(&plan).unwrap();
    b.apply(&plan).unwrap();
    let after = b.read().unwrap();
    assert_eq!(after.structure, Structure::Current);
    assert_eq!(after.entries, old, "nothing deleted");
    assert!(
        u.tuples("user.rules")
            .iter()
            .all(|t| t.contains(" tcp 443 ")),
        "{:#?}",
        u.tuples("user.rules")
    );
    assert_eq!(kernel_sources(&u.kernel(false)).len(), 3);
}
