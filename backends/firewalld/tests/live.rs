//! The firewalld backend against a real firewalld daemon, each test with its own daemon, bus,
//! configuration directory and network namespace (see `daemon/mod.rs`). The host's firewalld is
//! never started and the host's `/etc/firewalld` never written.

mod daemon;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use cfa_core::{
    AllowList, Backend, BackendError, Family, Live, Plan, Protocol, RuleSpec, Runner, Structure,
};
use cfa_firewalld::{status_with, FirewalldBackend, FirewalldOptions, Status};
use daemon::Firewalld;
use testkit::tcp::{connect, Lab};
use testkit::NetNs;

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn backend_with(fw: &Firewalld, spec: RuleSpec, command: Vec<String>) -> FirewalldBackend {
    FirewalldBackend::new(
        FirewalldOptions {
            command,
            config_dir: fw.config_dir(),
            ..FirewalldOptions::default()
        },
        spec,
        Runner::in_netns(fw.ns.name()),
    )
    .unwrap()
}

fn backend(fw: &Firewalld, spec: RuleSpec) -> FirewalldBackend {
    backend_with(fw, spec, fw.command())
}

/// One engine run: read, plan, check, apply, read back.
#[track_caller]
fn sync(b: &FirewalldBackend, desired: &AllowList) -> Option<Plan> {
    let live = b.read().unwrap();
    let plan = Plan::new(&live, desired)?;
    b.check(&plan).unwrap();
    b.apply(&plan).unwrap();
    let after = b.read().unwrap();
    assert_eq!(after.structure, Structure::Current, "after applying {plan}");
    assert_eq!(&after.entries, desired);
    Some(plan)
}

/// Whether a file of the configuration directory is one of ours (or firewalld's backup of one).
fn ours(path: &str) -> bool {
    [
        "ipsets/cf-allowlist-v4.xml",
        "ipsets/cf-allowlist-v6.xml",
        "policies/cf-allowlist.xml",
        "policies/cf-allowlist-drop.xml",
    ]
    .iter()
    .any(|f| path == *f || path == format!("{f}.old"))
}

/// Our files, backups aside, with their modification times.
fn our_files(fw: &Firewalld) -> BTreeMap<String, (String, i64, i64)> {
    fw.files(|p| ours(p) && !p.ends_with(".old"))
        .into_iter()
        .map(|(p, bytes)| {
            let m = fs::metadata(fw.config_dir().join(&p)).unwrap();
            (p, (bytes, m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn foreign(fw: &Firewalld) -> BTreeMap<String, String> {
    fw.files(|p| !ours(p))
}

/// A zone written by hand, with a comment and layout firewalld would not write itself.
const WEB_ZONE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <!-- the web tier: keep this comment -->\n  <short>web</short>\n  <source address=\"10.20.0.0/16\"/>\n  <service name=\"http\"/>\n\n  <rule family=\"ipv4\">\n    <source ipset=\"blocklist\"/>\n    <drop/>\n  </rule>\n</zone>\n";

/// An operator's ipset, zone and policy next to ours.
fn operator_objects(fw: &Firewalld) {
    fw.cmd(&[
        "--permanent",
        "--new-ipset=blocklist",
        "--type=hash:ip",
        "--option=family=inet",
    ]);
    fw.cmd(&["--permanent", "--ipset=blocklist", "--add-entry=192.0.2.7"]);
    fs::write(fw.config_dir().join("zones/web.xml"), WEB_ZONE).unwrap();
    fw.cmd(&["--permanent", "--new-policy=ops"]);
    fw.cmd(&["--permanent", "--policy=ops", "--add-ingress-zone=public"]);
    fw.cmd(&["--permanent", "--policy=ops", "--add-egress-zone=HOST"]);
    fw.cmd(&["--permanent", "--policy=ops", "--add-service=https"]);
    fw.cmd(&["--reload"]);
}

fn conflict(result: Result<(), BackendError>) -> String {
    match result {
        Err(BackendError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn first_sync_noop_changed_list_and_reload_leave_foreign_objects_byte_identical() {
    let fw = Firewalld::start("fwfirst");
    operator_objects(&fw);
    let before = foreign(&fw);
    assert!(before.contains_key("zones/web.xml") && before.contains_key("ipsets/blocklist.xml"));
    let b = backend(&fw, RuleSpec::default());
    assert_eq!(b.name(), "firewalld");
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Absent);
    assert!(
        live.warnings
            .iter()
            .any(|w| w.contains("takes a `firewall-cmd --reload`")),
        "{:?}",
        live.warnings
    );

    // First sync: the objects are created (one reload) and live in the kernel.
    let cf = cloudflare();
    let plan = sync(&b, &cf).expect("first sync changes");
    assert_eq!(plan.add.len(), 22);
    assert_eq!(fw.kernel_set("cf-allowlist-v4").len(), 15);
    assert_eq!(fw.kernel_set("cf-allowlist-v6").len(), 7);
    let files = our_files(&fw);
    assert_eq!(files.len(), 3, "{:?}", files.keys());
    for (path, (bytes, _, _)) in &files {
        assert!(
            bytes.contains("<short>cf-allowlist</short>"),
            "{path}: {bytes}"
        );
    }
    let v4 = files["ipsets/cf-allowlist-v4.xml"].0.clone();
    assert!(v4.contains("<entry>104.16.0.0/13</entry>"), "{v4}");
    assert_eq!(foreign(&fw), before, "foreign objects byte for byte");
    assert!(b.read().unwrap().warnings.is_empty());

    // No-op: nothing planned, no file written, no reload.
    fw.mark();
    assert!(sync(&b, &cf).is_none());
    assert_eq!(our_files(&fw), files, "same bytes, same mtime");
    assert!(fw.marked(), "no reload");

    // Changed list: 104.16.0.0/12 overlaps the /13 and /14 it replaces (removed first), and an
    // IPv6 range goes. Entries only: no reload.
    let mut new = cf.clone();
    new.v4.remove(&"104.16.0.0/13".parse().unwrap());
    new.v4.remove(&"104.24.0.0/14".parse().unwrap());
    new.v4.insert("104.16.0.0/12".parse().unwrap());
    new.v6.remove(&"2405:b500::/32".parse().unwrap());
    let plan = sync(&b, &new).unwrap();
    assert_eq!(plan.add, list(&["104.16.0.0/12"]));
    assert_eq!(plan.remove.len(), 3);
    assert!(fw.marked(), "entries change without a reload");
    let kernel = fw.kernel_set("cf-allowlist-v4");
    assert!(kernel.contains(&"104.16.0.0/12".to_string()), "{kernel:?}");
    assert_eq!(kernel.len(), 14);
    assert_eq!(fw.kernel_set("cf-allowlist-v6").len(), 6);
    let v4 = fs::read_to_string(fw.config_dir().join("ipsets/cf-allowlist-v4.xml")).unwrap();
    assert!(v4.contains("<entry>104.16.0.0/12</entry>") && !v4.contains("104.24.0.0"));
    assert_eq!(foreign(&fw), before);

    // firewall-cmd --reload rebuilds the runtime from the permanent configuration: still there.
    fw.cmd(&["--reload"]);
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert_eq!(live.entries, new);
    assert_eq!(fw.kernel_set("cf-allowlist-v4").len(), 14);

    // And back (the 2021 split): the /12 goes first, then the /13 and /14 come.
    sync(&b, &cf).unwrap();
    assert_eq!(fw.kernel_set("cf-allowlist-v4").len(), 15);
    assert_eq!(foreign(&fw), before);
    // The operator's objects still load and work as they did.
    assert!(fw.cmd(&["--info-ipset=blocklist"]).contains("192.0.2.7"));
    assert!(fw
        .cmd(&["--zone=web", "--list-sources"])
        .contains("10.20.0.0/16"));
}

fn strangers(client: &NetNs, port: u16) -> Vec<String> {
    Lab::STRANGERS
        .iter()
        .map(|(src, dst)| connect(client, src, dst, port))
        .collect()
}

fn allowed(client: &NetNs, port: u16) -> Vec<String> {
    Lab::ALLOWED
        .iter()
        .map(|(src, dst)| connect(client, src, dst, port))
        .collect()
}

fn all(results: &[String], want: &str) -> bool {
    results.iter().all(|r| r.starts_with(want))
}

fn none(results: &[String], want: &str) -> bool {
    !results.iter().any(|r| r.starts_with(want))
}

#[test]
fn restrict_drops_strangers_with_real_tcp_and_takes_nothing_over() {
    testkit::require_root();
    let server = NetNs::new("fwrst");
    let client = NetNs::new("fwrstc");
    let _lab = Lab::new(&server, &client, &[443, 22]);
    let fw = Firewalld::start_in(server);
    let desired = list(&Lab::ALLOWED_NETS);

    // firewalld's public zone: ssh only. Port 443 is rejected for everyone.
    assert!(
        none(&allowed(&client, 443), "ok"),
        "{:?}",
        allowed(&client, 443)
    );
    let open = backend(&fw, RuleSpec::default());
    sync(&open, &desired);
    assert!(
        all(&allowed(&client, 443), "ok"),
        "{:?}",
        allowed(&client, 443)
    );
    // Rejected by the zone (or, IPv6, unanswered): not in.
    assert!(
        none(&strangers(&client, 443), "ok"),
        "{:?}",
        strangers(&client, 443)
    );
    // The allowlisted addresses keep what the zone gives them (a zone bound to them would not).
    assert!(
        all(&allowed(&client, 22), "ok"),
        "{:?}",
        allowed(&client, 22)
    );
    assert!(all(&strangers(&client, 22), "ok"));

    // The operator opens https to everyone, in the zone.
    fw.cmd(&["--permanent", "--add-service=https"]);
    fw.cmd(&["--add-service=https"]);
    assert!(all(&strangers(&client, 443), "ok"));
    let zones = foreign(&fw);

    // restrict: strangers are dropped on the governed ports, whatever the zone opens; the zone
    // file is not touched; ssh is not governed.
    let strict = backend(
        &fw,
        RuleSpec {
            restrict: true,
            ..RuleSpec::default()
        },
    );
    let live = strict.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("cf-allowlist-drop is missing")),
        "{:?}",
        live.structure
    );
    sync(&strict, &desired);
    assert!(
        all(&strangers(&client, 443), "timeout"),
        "{:?}",
        strangers(&client, 443)
    );
    assert!(
        all(&allowed(&client, 443), "ok"),
        "{:?}",
        allowed(&client, 443)
    );
    assert!(all(&allowed(&client, 22), "ok"));
    assert!(all(&strangers(&client, 22), "ok"));
    assert_eq!(foreign(&fw), zones, "no zone changed");
    assert!(fw
        .cmd(&["--info-policy=cf-allowlist-drop"])
        .contains("rule family=\"ipv6\" source NOT ipset=\"cf-allowlist-v6\" port port=\"443\" protocol=\"tcp\" drop"));
    // It survives a reload.
    fw.cmd(&["--reload"]);
    assert!(all(&strangers(&client, 443), "timeout"));
    assert_eq!(strict.read().unwrap().structure, Structure::Current);

    // restrict off: the drop policy goes.
    let live = open.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("restrict is off")),
        "{:?}",
        live.structure
    );
    sync(&open, &desired);
    assert!(all(&strangers(&client, 443), "ok"));
    assert!(!fw.cmd(&["--get-policies"]).contains("cf-allowlist-drop"));

    // On again, then purged: strangers are back, ours are gone.
    sync(&strict, &desired);
    assert!(all(&strangers(&client, 443), "timeout"));
    strict.purge().unwrap();
    assert!(all(&strangers(&client, 443), "ok"));
    assert!(all(&allowed(&client, 443), "ok"), "https is open to all");
    assert_eq!(foreign(&fw), zones);
}

#[test]
fn purge_removes_everything_from_both_layers_and_is_idempotent() {
    let fw = Firewalld::start("fwpurge");
    operator_objects(&fw);
    let before = foreign(&fw);
    let b = backend(
        &fw,
        RuleSpec {
            restrict: true,
            ..RuleSpec::default()
        },
    );
    sync(&b, &cloudflare());
    assert_eq!(our_files(&fw).len(), 4);
    b.purge().unwrap();
    assert!(our_files(&fw).is_empty(), "{:?}", our_files(&fw).keys());
    for layer in [&[][..], &["--permanent"][..]] {
        let ipsets = fw.cmd(&[layer, &["--get-ipsets"]].concat());
        let policies = fw.cmd(&[layer, &["--get-policies"]].concat());
        assert!(!ipsets.contains("cf-allowlist"), "{layer:?} {ipsets}");
        assert!(!policies.contains("cf-allowlist"), "{layer:?} {policies}");
    }
    assert!(fw.kernel_set("cf-allowlist-v4").is_empty());
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Absent);
    assert!(!live.is_present());
    assert_eq!(foreign(&fw), before);
    // A second purge changes nothing and reloads nothing.
    fw.mark();
    b.purge().unwrap();
    assert!(fw.marked(), "no reload");
    assert_eq!(foreign(&fw), before);
}

#[test]
fn an_ipset_an_operator_zone_uses_is_never_deleted() {
    let fw = Firewalld::start("fwuse");
    let b = backend(&fw, RuleSpec::default());
    sync(&b, &list(&["173.245.48.0/20", "2400:cb00::/32"]));
    fw.cmd(&[
        "--permanent",
        "--zone=trusted",
        "--add-source=ipset:cf-allowlist-v4",
    ]);
    let files = fw.files(|_| true);
    let m = conflict(b.purge());
    assert!(
        m.contains("zone trusted uses ipset cf-allowlist-v4 (source ipset:cf-allowlist-v4)")
            && m.contains("nothing was changed"),
        "{m}"
    );
    assert_eq!(fw.files(|_| true), files);
    // Nor when IPv6 alone stays managed.
    let v6 = backend(
        &fw,
        RuleSpec {
            families: vec![Family::V6],
            ..RuleSpec::default()
        },
    );
    let live = v6.read().unwrap();
    let plan = Plan::new(&live, &list(&["2400:cb00::/32"])).unwrap();
    assert!(conflict(v6.check(&plan)).contains("zone trusted uses ipset cf-allowlist-v4"));
    assert!(conflict(v6.apply(&plan)).contains("zone trusted uses ipset cf-allowlist-v4"));
    assert_eq!(fw.files(|_| true), files);
    // Without that use, the IPv4 ipset goes.
    fw.cmd(&[
        "--permanent",
        "--zone=trusted",
        "--remove-source=ipset:cf-allowlist-v4",
    ]);
    sync(&v6, &list(&["2400:cb00::/32"]));
    assert!(!fw.cmd(&["--get-ipsets"]).contains("cf-allowlist-v4"));
    assert!(!fw.cmd(&["--info-policy=cf-allowlist"]).contains("ipv4"));
}

#[test]
fn objects_of_our_name_that_we_did_not_create_are_never_rebuilt() {
    let fw = Firewalld::start("fwforeign");
    fw.cmd(&[
        "--permanent",
        "--new-ipset=cf-allowlist-v4",
        "--type=hash:ip",
        "--option=family=inet",
    ]);
    fw.cmd(&[
        "--permanent",
        "--ipset=cf-allowlist-v4",
        "--add-entry=192.0.2.9",
    ]);
    fw.cmd(&["--reload"]);
    let files = fw.files(|_| true);
    let b = backend(&fw, RuleSpec::default());
    let live = b.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("hash:ip")),
        "{:?}",
        live.structure
    );
    let plan = Plan::new(&live, &list(&["173.245.48.0/20"])).unwrap();
    for result in [b.check(&plan), b.apply(&plan), b.purge()] {
        let m = conflict(result);
        assert!(
            m.contains("ipset cf-allowlist-v4 was not created by cf-allowlist"),
            "{m}"
        );
    }
    assert_eq!(fw.files(|_| true), files, "nothing written");

    // A policy of ours that someone widened (ssh from ANY zone) is refused, not silently kept.
    fw.cmd(&["--permanent", "--delete-ipset=cf-allowlist-v4"]);
    fw.cmd(&["--reload"]);
    sync(&b, &list(&["173.245.48.0/20"]));
    fw.cmd(&["--permanent", "--policy=cf-allowlist", "--add-service=ssh"]);
    let live = b.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("services: ssh")),
        "{:?}",
        live.structure
    );
    let plan = Plan::new(&live, &list(&["173.245.48.0/20"])).unwrap();
    let m = conflict(b.apply(&plan));
    assert!(
        m.contains("has services: ssh") && m.contains("--delete-policy=cf-allowlist"),
        "{m}"
    );
}

#[test]
fn hand_edits_and_spec_changes_are_repaired_without_a_reload() {
    let fw = Firewalld::start("fwedit");
    let b = backend(&fw, RuleSpec::default());
    let desired = list(&["173.245.48.0/20", "103.21.244.0/22", "2400:cb00::/32"]);
    sync(&b, &desired);
    fw.mark();

    // A runtime-only entry (someone's firewall-cmd without --permanent): live until removed.
    fw.cmd(&["--ipset=cf-allowlist-v4", "--add-entry=192.0.2.0/24"]);
    let live = b.read().unwrap();
    assert!(live.entries.contains(&"192.0.2.0/24".parse().unwrap()));
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("1 entries only at runtime")),
        "{:?}",
        live.structure
    );
    let plan = sync(&b, &desired).unwrap();
    assert_eq!(plan.remove, list(&["192.0.2.0/24"]));

    // A rule of ours removed from the permanent configuration only.
    fw.cmd(&[
        "--permanent",
        "--policy=cf-allowlist",
        "--remove-rich-rule=rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"443\" protocol=\"tcp\" accept",
    ]);
    assert!(matches!(
        b.read().unwrap().structure,
        Structure::Outdated(_)
    ));
    sync(&b, &desired).unwrap();

    // An entry as the operator would type it (no prefix) reads as its host network, and is
    // rewritten in the canonical form (removed first: the two overlap).
    fw.cmd(&[
        "--permanent",
        "--ipset=cf-allowlist-v4",
        "--add-entry=198.51.100.7",
    ]);
    fw.cmd(&["--ipset=cf-allowlist-v4", "--add-entry=198.51.100.7"]);
    let live = b.read().unwrap();
    assert!(live.entries.contains(&"198.51.100.7/32".parse().unwrap()));
    let mut with_host = desired.clone();
    with_host.insert("198.51.100.7/32".parse().unwrap());
    sync(&b, &with_host).unwrap();
    assert!(fw
        .cmd(&["--info-ipset=cf-allowlist-v4"])
        .contains("198.51.100.7/32"));

    // Other ports and both protocols: the rules change, in both layers, still without a reload.
    let both = backend(
        &fw,
        RuleSpec {
            ports: vec![443, 8443],
            protocol: Protocol::Both,
            ..RuleSpec::default()
        },
    );
    sync(&both, &with_host).unwrap();
    for layer in [&[][..], &["--permanent"][..]] {
        let info = fw.cmd(&[layer, &["--info-policy=cf-allowlist"]].concat());
        let rules = info.lines().filter(|l| l.starts_with('\t')).count();
        assert_eq!(rules, 8, "{info}");
        assert!(
            info.contains("port port=\"8443\" protocol=\"udp\""),
            "{info}"
        );
        assert!(!info.contains("port=\"80\""), "{info}");
    }
    assert!(fw.marked(), "no reload in all of this");

    // Every port of the protocol: `protocol value=` rules.
    let every = backend(
        &fw,
        RuleSpec {
            ports: vec![],
            ..RuleSpec::default()
        },
    );
    sync(&every, &with_host).unwrap();
    let info = fw.cmd(&["--info-policy=cf-allowlist"]);
    assert!(
        info.contains(
            "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" protocol value=\"tcp\" accept"
        ),
        "{info}"
    );
}

#[test]
fn status_reports_a_stopped_firewalld_and_the_backend_never_starts_it() {
    let mut fw = Firewalld::start("fwstate");
    let runner = Runner::in_netns(fw.ns.name());
    assert_eq!(status_with(&runner, &fw.command()), Status::Running);
    let b = backend(&fw, RuleSpec::default());
    sync(&b, &list(&["173.245.48.0/20"]));
    fw.stop_daemon();
    let Status::NotRunning(why) = status_with(&runner, &fw.command()) else {
        panic!("expected not running");
    };
    assert!(why.contains("not running"), "{why}");
    let err = b.read().unwrap_err().to_string();
    assert!(
        err.contains("firewalld is not running") && err.contains("never starts it"),
        "{err}"
    );
    assert!(b.purge().is_err());
    assert!(
        !fw.try_cmd(&["--state"]).0,
        "still stopped: nothing started it"
    );
    assert_eq!(
        status_with(&runner, &["cf-allowlist-no-such-firewall-cmd".to_string()]),
        Status::NotInstalled
    );
    // Started again by its operator, it loads our objects from the permanent configuration.
    fw.start_daemon();
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert_eq!(live.entries, list(&["173.245.48.0/20"]));
}

// ---- faults: a failure at every change an apply makes ----

/// Wraps firewall-cmd: counts the calls that change something and fails the one numbered
/// `$CFA_FAULT_AT` (with `CFA_FAULT_MODE=break`, breaks our policy file instead and lets that
/// call, a reload, run: firewalld then cannot load its configuration).
const WRAPPER: &str = r#"
case " $* " in
  *" --add-"*|*" --remove-"*|*" --new-"*|*" --delete-"*|*" --reload "*)
    n=$(cat "$CFA_FAULT_COUNT" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" > "$CFA_FAULT_COUNT"
    if [ "$n" = "$CFA_FAULT_AT" ]; then
      if [ "$CFA_FAULT_MODE" = break ]; then
        sed -i 's/ipset="cf-allowlist-v4"/ipset="cf-allowlist-v9"/' /etc/firewalld/policies/cf-allowlist.xml
      else
        echo "Error: COMMAND_FAILED: injected fault at change $n: $*" >&2
        exit 13
      fi
    fi;;
esac
exec firewall-cmd "$@"
"#;

fn faulty(fw: &Firewalld, spec: RuleSpec, at: usize, mode: &str) -> FirewalldBackend {
    let script = fw.scratch().join("fault.sh");
    fs::write(&script, WRAPPER).unwrap();
    let count = fw.scratch().join("fault.count");
    let _ = fs::remove_file(&count);
    let mut command = fw.command();
    command.pop();
    command.extend([
        format!("CFA_FAULT_COUNT={}", count.display()),
        format!("CFA_FAULT_AT={at}"),
        format!("CFA_FAULT_MODE={mode}"),
        "sh".into(),
        script.display().to_string(),
    ]);
    backend_with(fw, spec, command)
}

/// Everything a failed apply must leave as it was.
///
/// An undo adds back what it removed at the end of firewalld's lists, so our objects compare by
/// their sorted lines (entries, rules); every other file by its bytes.
fn observe(fw: &Firewalld, b: &FirewalldBackend) -> (Live, BTreeMap<String, String>, Vec<String>) {
    let files = fw
        .files(|p| !p.ends_with(".old"))
        .into_iter()
        .map(|(p, text)| {
            if ours(&p) {
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort();
                let sorted = lines.join("\n");
                (p, sorted)
            } else {
                (p, text)
            }
        })
        .collect();
    let mut runtime: Vec<String> = [
        &["--get-ipsets"][..],
        &["--get-policies"],
        &["--info-ipset=cf-allowlist-v4"],
        &["--info-policy=cf-allowlist"],
    ]
    .iter()
    .flat_map(|a| {
        let (_, out, _) = fw.try_cmd(a);
        out.split_whitespace().map(String::from).collect::<Vec<_>>()
    })
    .collect();
    runtime.sort();
    (b.read().unwrap(), files, runtime)
}

/// Fails every change call of `change` in turn: each failure leaves the firewall as it was (the
/// error says the applied steps were undone); then the change goes through.
fn fail_every_step(
    fw: &Firewalld,
    spec: RuleSpec,
    change: impl Fn(&FirewalldBackend) -> Result<(), BackendError>,
) -> usize {
    let good = backend(fw, spec.clone());
    let before = observe(fw, &good);
    for at in 1.. {
        let b = faulty(fw, spec.clone(), at, "fail");
        match change(&b) {
            Ok(()) => return at - 1,
            Err(e) => {
                assert!(
                    !matches!(e, BackendError::UndoFailed { .. }),
                    "fault at change {at}: undo failed: {e}"
                );
                let msg = e.to_string();
                assert!(
                    msg.contains("injected fault"),
                    "fault at change {at}: {msg}"
                );
                if at > 1 {
                    assert!(msg.contains("undone"), "fault at change {at}: {msg}");
                }
                assert_eq!(observe(fw, &good), before, "fault at change {at}: {msg}");
                assert_eq!(fw.cmd(&["--state"]).trim(), "running");
            }
        }
    }
    unreachable!()
}

fn apply_to(desired: AllowList) -> impl Fn(&FirewalldBackend) -> Result<(), BackendError> {
    move |b: &FirewalldBackend| {
        let live = b.read()?;
        let plan = Plan::new(&live, &desired).expect("a change");
        b.apply(&plan)
    }
}

#[test]
fn a_failure_at_any_step_of_a_first_sync_or_purge_is_undone() {
    let fw = Firewalld::start("fwfault1");
    // The ipset exists before, so that the runtime observation has something to show.
    let spec = RuleSpec {
        restrict: true,
        ..RuleSpec::default()
    };
    let ipv4 = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    sync(&backend(&fw, ipv4), &list(&["173.245.48.0/20"]));
    // restrict and IPv6 added: ipset, policy created, policy rules changed, a reload.
    let steps = fail_every_step(&fw, spec.clone(), apply_to(cloudflare()));
    assert!(steps >= 4, "{steps}");
    assert_eq!(
        backend(&fw, spec.clone()).read().unwrap().structure,
        Structure::Current
    );
    let steps = fail_every_step(&fw, spec.clone(), |b| b.purge());
    assert!(steps >= 4, "{steps}");
    assert!(!backend(&fw, spec).read().unwrap().is_present());
}

#[test]
fn a_failure_at_any_step_of_an_entries_and_ports_change_is_undone() {
    let fw = Firewalld::start("fwfault2");
    let spec = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    sync(
        &backend(&fw, spec.clone()),
        &list(&["173.245.48.0/20", "104.16.0.0/13", "104.24.0.0/14"]),
    );
    let new = RuleSpec {
        ports: vec![443, 8443],
        ..spec
    };
    // Per layer: the overlapping /13 and /14 removed, the /12 added, the unrelated /20 removed;
    // one rule added, one removed.
    let steps = fail_every_step(
        &fw,
        new,
        apply_to(list(&["104.16.0.0/12", "198.41.128.0/17"])),
    );
    assert_eq!(steps, 10);
}

#[test]
fn a_reload_firewalld_cannot_load_is_recovered_offline() {
    let fw = Firewalld::start("fwfailed");
    let before = foreign(&fw);
    let good = backend(&fw, RuleSpec::default());
    // The reload of the first sync (change 4: two ipsets, the policy, the reload) runs on a
    // policy file broken behind firewalld's back: firewalld goes FAILED, with no rules.
    let b = faulty(&fw, RuleSpec::default(), 4, "break");
    let err = apply_to(cloudflare())(&b).unwrap_err();
    let msg = err.to_string();
    assert!(
        !matches!(err, BackendError::UndoFailed { .. })
            && msg.contains("firewalld reloaded its previous configuration"),
        "{msg}"
    );
    assert_eq!(fw.cmd(&["--state"]).trim(), "running");
    assert!(our_files(&fw).is_empty(), "{:?}", our_files(&fw).keys());
    assert_eq!(foreign(&fw), before);
    assert!(!good.read().unwrap().is_present());
    assert!(
        fw.daemon_log().contains("cf-allowlist-v9"),
        "{}",
        fw.daemon_log()
    );
    sync(&good, &cloudflare());
}

#[test]
fn a_broken_operator_configuration_is_never_reloaded() {
    let fw = Firewalld::start("fwbroken");
    // A zone naming an ipset that was deleted from the permanent configuration only:
    // firewall-cmd --check-config passes it, a reload would leave firewalld FAILED.
    fw.cmd(&["--permanent", "--new-ipset=opset", "--type=hash:net"]);
    fw.cmd(&["--permanent", "--zone=work", "--add-source=ipset:opset"]);
    fw.cmd(&["--reload"]);
    fw.cmd(&["--permanent", "--zone=work", "--remove-source=ipset:opset"]);
    fw.cmd(&["--permanent", "--delete-ipset=opset"]);
    fs::write(
        fw.config_dir().join("zones/work.xml"),
        fs::read_to_string(fw.config_dir().join("zones/work.xml"))
            .unwrap()
            .replace("</zone>", "  <source ipset=\"opset\"/>\n</zone>"),
    )
    .unwrap();
    let before = fw.files(|p| !ours(p));
    let b = backend(&fw, RuleSpec::default());
    let err = apply_to(cloudflare())(&b).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BackendError::Conflict(_))
            && msg.contains("zone work uses ipset opset")
            && msg.contains("undone"),
        "{msg}"
    );
    assert_eq!(fw.cmd(&["--state"]).trim(), "running");
    assert_eq!(fw.files(|p| !ours(p)), before);
    assert!(our_files(&fw).is_empty());
}
