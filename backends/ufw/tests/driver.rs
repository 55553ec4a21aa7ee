//! The two ways of running ufw's commands ([`Driver::Cli`]: one `ufw` process each;
//! [`Driver::Frontend`]: one Python process driving ufw's own frontend) leave ufw in the same
//! state, byte for byte: the same plans are applied with each driver in two namespaces (each with
//! its own copy of the stock `/etc/ufw` and `/etc/default` under `/etc/netns/NS/`), and after
//! every stage the rules files, the running ruleset and `ufw status verbose` are compared. ufw
//! itself lists, deletes and reloads the rules the frontend driver added; a no-op read starts no
//! process.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use cfa_core::{AllowList, Backend, Family, Plan, RuleSpec, Runner, Structure};
use cfa_ufw::driver::frontend_available;
use cfa_ufw::tuple::parse_rules;
use cfa_ufw::{is_active, is_active_in, Driver, UfwBackend, UfwOptions};
use testkit::NetNs;

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

/// A namespace with its own ufw configuration and an active ufw.
struct Ufw {
    ns: NetNs,
    driver: Driver,
}

impl Ufw {
    fn new(tag: &str, driver: Driver) -> Ufw {
        testkit::require_root();
        let ns = NetNs::new(tag);
        ns.overlay_etc(&["ufw", "default"]);
        ns.exec_ok("ufw", &["--force", "enable"]);
        Ufw { ns, driver }
    }

    fn dir(&self) -> PathBuf {
        self.ns.etc().join("ufw")
    }

    fn options(&self) -> UfwOptions {
        UfwOptions {
            dir: self.dir(),
            defaults_file: self.ns.etc().join("default/ufw"),
            driver: self.driver,
            ..UfwOptions::default()
        }
    }

    fn backend(&self, spec: RuleSpec) -> UfwBackend {
        UfwBackend::new(self.options(), spec, Runner::in_netns(self.ns.name()))
    }

    fn ufw(&self, args: &[&str]) -> String {
        self.ns.exec_ok("ufw", args)
    }

    /// Everything the comparison looks at: both rules files (bytes), the running ruleset of
    /// both families (`iptables-save` without its dated comments and packet counters), and
    /// `ufw status verbose`.
    fn state(&self) -> State {
        let file = |name: &str| fs::read_to_string(self.dir().join(name)).unwrap();
        let ruleset = |tool: &str| {
            self.ns
                .exec_ok(tool, &[])
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match l.rsplit_once(" [") {
                    Some((chain, _)) if l.starts_with(':') => chain.to_string(),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
        };
        State {
            user: file("user.rules"),
            user6: file("user6.rules"),
            v4: ruleset("iptables-save"),
            v6: ruleset("ip6tables-save"),
            status: self.ufw(&["status", "verbose"]),
        }
    }

    fn ours(&self, file: &str) -> usize {
        let text = fs::read_to_string(self.dir().join(file)).unwrap();
        parse_rules(&text, file == "user6.rules")
            .unwrap()
            .iter()
            .filter(|t| t.has_comment("cf-allowlist"))
            .count()
    }
}

#[derive(Debug, PartialEq, Eq)]
struct State {
    user: String,
    user6: String,
    v4: Vec<String>,
    v6: Vec<String>,
    status: String,
}

/// One namespace per driver, the same operator rules in both.
struct Pair {
    cli: Ufw,
    frontend: Ufw,
}

impl Pair {
    fn new() -> Pair {
        let pair = Pair {
            cli: Ufw::new("drvcli", Driver::Cli),
            frontend: Ufw::new("drvfront", Driver::Frontend),
        };
        assert_eq!(
            frontend_available(&Runner::in_netns(pair.frontend.ns.name())),
            Ok(()),
            "the frontend driver must really run here, not fall back to the CLI"
        );
        for u in pair.both() {
            u.ufw(&["allow", "22/tcp"]);
            u.ufw(&["allow", "from", "10.0.0.0/8", "to", "any", "app", "CIFS"]);
        }
        pair.same("the start");
        pair
    }

    fn both(&self) -> [&Ufw; 2] {
        [&self.cli, &self.frontend]
    }

    /// Asserts that both namespaces are in the same state, naming the stage.
    fn same(&self, stage: &str) {
        let (a, b) = (self.cli.state(), self.frontend.state());
        assert_eq!(a.user, b.user, "user.rules after {stage}");
        assert_eq!(a.user6, b.user6, "user6.rules after {stage}");
        assert_eq!(a.v4, b.v4, "iptables-save after {stage}");
        assert_eq!(a.v6, b.v6, "ip6tables-save after {stage}");
        assert_eq!(a.status, b.status, "ufw status verbose after {stage}");
    }

    /// One engine run (read, plan, check, apply, read back) with each driver; both must plan the
    /// same and end in the same state. Returns the number of changes planned.
    fn sync(&self, spec: &RuleSpec, desired: &AllowList, stage: &str) -> usize {
        let mut planned = Vec::new();
        for u in self.both() {
            let b = u.backend(spec.clone());
            let live = b.read().unwrap();
            let Some(plan) = Plan::new(&live, desired) else {
                planned.push(0);
                continue;
            };
            b.check(&plan).unwrap();
            b.apply(&plan)
                .unwrap_or_else(|e| panic!("{stage}, driver {}: {e}", u.driver));
            let after = b.read().unwrap();
            assert_eq!(after.structure, Structure::Current, "{stage}: {plan}");
            assert_eq!(&after.entries, desired, "{stage}");
            planned.push(plan.add.len() + plan.remove.len());
        }
        assert_eq!(planned[0], planned[1], "{stage}: the same plan");
        self.same(stage);
        planned[0]
    }
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
fn both_drivers_leave_ufw_byte_for_byte_alike() {
    let pair = Pair::new();
    let open = RuleSpec::default();
    let restrict = RuleSpec {
        restrict: true,
        ..RuleSpec::default()
    };
    let cf = cfa_core::snapshot::cloudflare();
    assert_eq!(pair.sync(&open, &cf, "the first sync"), 22);
    assert_eq!(pair.frontend.ours("user.rules"), 15);
    assert_eq!(pair.sync(&open, &cf, "a no-op"), 0);

    // A changed list: two ranges go, two come.
    let mut changed = cf.difference(&list(&["173.245.48.0/20", "2400:cb00::/32"]));
    changed.insert("198.51.100.0/24".parse().unwrap());
    changed.insert("2001:db8:cf::/48".parse().unwrap());
    assert_eq!(pair.sync(&open, &changed, "a changed list"), 4);

    // restrict on: deny rules appended after ours; then new ranges are inserted before them.
    // (The same entries: the plan only rebuilds the structure.)
    pair.sync(&restrict, &changed, "restrict on");
    let denies = |u: &Ufw| {
        let text = fs::read_to_string(u.dir().join("user.rules")).unwrap();
        parse_rules(&text, false)
            .unwrap()
            .iter()
            .filter(|t| t.has_comment("cf-allowlist") && t.action == "deny")
            .count()
    };
    assert_eq!(denies(&pair.frontend), 1);
    let mut more = changed.clone();
    more.insert("203.0.113.0/24".parse().unwrap());
    more.insert("2001:db8:cf1::/48".parse().unwrap());
    assert_eq!(pair.sync(&restrict, &more, "inserts before the deny"), 2);

    // A failure part-way, with restrict: an IPv4 insert and an IPv4 delete go through, the IPv6
    // insert fails (ufw cannot write user6.rules); both undo, with the same message.
    let failing = {
        let mut l = more.difference(&list(&["198.51.100.0/24"]));
        l.insert("192.0.2.0/24".parse().unwrap());
        l.insert("2001:db8:cf2::/48".parse().unwrap());
        l
    };
    let mut messages = Vec::new();
    for u in pair.both() {
        let b = u.backend(restrict.clone());
        let before = u.state();
        let live = b.read().unwrap();
        let plan = Plan::new(&live, &failing).unwrap();
        let err = {
            let _guard = Immutable::set(u.dir().join("user6.rules"));
            b.apply(&plan).unwrap_err()
        };
        assert_eq!(u.state(), before, "driver {}: all undone", u.driver);
        assert_eq!(b.read().unwrap(), live);
        messages.push(err.to_string());
    }
    assert!(
        messages[0].contains("is not writable")
            && messages[0].contains("2001:db8:cf2::/48")
            && messages[0].contains("step(s) already applied were undone"),
        "{}",
        messages[0]
    );
    assert_eq!(messages[0], messages[1], "the same error from both drivers");
    pair.same("an undone failure");

    // A user chain of ufw's deleted behind its back: ufw notices (`_need_reload`) and reloads its
    // rules from its files while inserting ours. Both drivers the same, and the chain is back.
    for u in pair.both() {
        u.ns.exec_ok("iptables", &["-F", "ufw-user-limit-accept"]);
        u.ns.exec_ok("iptables", &["-X", "ufw-user-limit-accept"]);
    }
    pair.same("a user chain deleted by hand");
    let mut reloaded = more.clone();
    reloaded.insert("192.0.2.0/24".parse().unwrap());
    let outcomes: Vec<Result<(), String>> = pair
        .both()
        .iter()
        .map(|u| {
            let b = u.backend(restrict.clone());
            let plan = Plan::new(&b.read().unwrap(), &reloaded).unwrap();
            b.apply(&plan).map_err(|e| e.to_string())
        })
        .collect();
    assert_eq!(outcomes[0], Ok(()));
    assert_eq!(outcomes[1], Ok(()));
    pair.same("a reload by ufw");
    assert!(
        pair.frontend
            .state()
            .v4
            .iter()
            .any(|l| l.starts_with(":ufw-user-limit-accept ")),
        "the chain is back"
    );

    // restrict off again, then a change while ufw is inactive (files only, no chains).
    pair.sync(&open, &more, "restrict off");
    assert_eq!(denies(&pair.frontend), 0);
    for u in pair.both() {
        u.ufw(&["disable"]);
    }
    assert_eq!(pair.sync(&open, &changed, "a change while inactive"), 2);
    for u in pair.both() {
        u.ufw(&["--force", "enable"]);
    }
    pair.same("enabling again");

    for u in pair.both() {
        u.backend(open.clone()).purge().unwrap();
        assert_eq!(u.ours("user.rules") + u.ours("user6.rules"), 0);
    }
    pair.same("the purge");
}

#[test]
fn ufw_itself_lists_deletes_and_reloads_what_the_frontend_driver_added() {
    let u = Ufw::new("drvown", Driver::Frontend);
    let b = u.backend(RuleSpec::default());
    let desired = list(&["173.245.48.0/20", "103.21.244.0/22", "2400:cb00::/32"]);
    let live = b.read().unwrap();
    b.apply(&Plan::new(&live, &desired).unwrap()).unwrap();

    let numbered = u.ufw(&["status", "numbered"]);
    let ours: Vec<&str> = numbered
        .lines()
        .filter(|l| l.ends_with("# cf-allowlist"))
        .collect();
    assert_eq!(ours.len(), 3, "{numbered}");
    assert!(
        ours[0].starts_with("[ 1] 80,443/tcp") && ours[0].contains("103.21.244.0/22"),
        "{numbered}"
    );

    // Deleted by ufw, by number: the backend sees the range gone, a sync puts it back.
    assert!(u.ufw(&["--force", "delete", "1"]).contains("Rule deleted"));
    let live = b.read().unwrap();
    assert_eq!(
        live.entries,
        list(&["173.245.48.0/20", "2400:cb00::/32"]),
        "{live:?}"
    );
    // Deleted by ufw, by rule, as an operator would type it.
    assert!(u
        .ufw(&[
            "delete",
            "allow",
            "proto",
            "tcp",
            "from",
            "2400:cb00::/32",
            "to",
            "any",
            "port",
            "80,443",
        ])
        .contains("Rule deleted (v6)"));
    let live = b.read().unwrap();
    assert_eq!(live.entries, list(&["173.245.48.0/20"]));
    b.apply(&Plan::new(&live, &desired).unwrap()).unwrap();
    assert_eq!(b.read().unwrap().entries, desired);

    // ufw reloads our rules from its files into the same running chains.
    let before = u.state();
    assert!(u.ufw(&["reload"]).contains("Firewall reloaded"));
    assert_eq!(u.state(), before);
    assert_eq!(b.read().unwrap().structure, Structure::Current);
}

#[test]
fn a_no_op_read_starts_no_process() {
    let u = Ufw::new("drvnoop", Driver::Frontend);
    let cf = cfa_core::snapshot::cloudflare();
    let b = u.backend(RuleSpec::default());
    let live = b.read().unwrap();
    b.apply(&Plan::new(&live, &cf).unwrap()).unwrap();

    // A runner for a namespace that does not exist: any process started through it fails.
    let blind = UfwBackend::new(
        u.options(),
        RuleSpec::default(),
        Runner::in_netns("cfa-no-such-namespace"),
    );
    let live = blind.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert!(live.warnings.is_empty(), "{:?}", live.warnings);
    assert!(Plan::new(&live, &cf).is_none(), "a no-op");
    assert_eq!(blind.families().unwrap(), Family::ALL.to_vec());
    assert!(is_active_in(&Runner::new(), &u.options()));

    // Inactive is read from ufw.conf, as ufw itself decides it.
    u.ufw(&["disable"]);
    let live = blind.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains("ufw is inactive")),
        "{:?}",
        live.warnings
    );
    assert!(!is_active_in(&Runner::new(), &u.options()));
    assert!(!is_active(&Runner::in_netns(u.ns.name())));
    assert!(u.ufw(&["status"]).starts_with("Status: inactive"));
    u.ufw(&["--force", "enable"]);
    assert!(is_active(&Runner::in_netns(u.ns.name())));
    assert!(blind.read().unwrap().warnings.is_empty());
}

#[test]
fn without_ufw_files_the_frontend_driver_refuses_like_the_cli() {
    // ufw's own checks run in the driver as in the CLI: a missing user6.rules is ufw's error.
    let pair = [
        Ufw::new("drvgone", Driver::Cli),
        Ufw::new("drvgonef", Driver::Frontend),
    ];
    let mut messages = Vec::new();
    for u in &pair {
        let b = u.backend(RuleSpec::default());
        let live = b.read().unwrap();
        let plan = Plan::new(&live, &list(&["173.245.48.0/20"])).unwrap();
        fs::remove_file(u.dir().join("after6.rules")).unwrap();
        messages.push(b.apply(&plan).unwrap_err().to_string());
    }
    assert!(messages[0].contains("after6.rules"), "{}", messages[0]);
    assert_eq!(messages[0], messages[1]);
}
