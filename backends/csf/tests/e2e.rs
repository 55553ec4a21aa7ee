//! End to end through the `Backend` trait on a temporary csf directory, with a recording
//! stand-in for csf (csf itself is not installed here). The stand-in appends its arguments to
//! `reload.log` and behaves like csf where it matters: while `csf.error` exists it refuses
//! everything but `-r` ("You have an unresolved error when starting csf"); a failed start prints
//! csf's `Error:` line, writes `csf.error`, marks the firewall open (`firewall` holds `open`; a
//! good start writes `drop`) and exits 1; `d=99999` in csf.allow is such a failure. Flag files
//! make it fail on purpose: `fail-exit` (exit 1, no csf.error), `fail-warning` (an `*Error*` line
//! about a missing /etc/crontab, then a good start, exit 0, as csf does), `fail-csferror` (exit 0
//! and a `csf.error`), `fail-start` (a failed start), `fail-append` (`csf -a` appends a line to
//! csf.allow during the reload, then a failed start), `fail-rewrite` (a line is removed from
//! csf.allow during the reload, then a failed start). A flag named `*-once` is consumed by the
//! first run, so the restoring run succeeds, as it would with csf and the previous files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cfa_core::{
    parse_cidr, AllowList, Backend, BackendError, Family, Plan, Protocol, RuleSpec, Runner,
    Structure,
};
use cfa_csf::{CsfBackend, CsfOptions, ALLOW_FILE, IGNORE_FILE};

const ALLOW: &[u8] = include_bytes!("fixtures/csf.allow");
const ALLOW_CRLF: &[u8] = include_bytes!("fixtures/csf.allow.crlf");
const IGNORE: &[u8] = include_bytes!("fixtures/csf.ignore");
const CONF_PRODUCTION: &[u8] = include_bytes!("fixtures/csf.conf.production");
const CONF_RESTRICTED: &[u8] = include_bytes!("fixtures/csf.conf.restricted");
const CONF_TESTING: &[u8] = include_bytes!("fixtures/csf.conf");

const STAND_IN: &str = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$*" >> "$d/reload.log"
if [ -e "$d/csf.error" ] && [ "$1" != "-r" ]; then
  echo "You have an unresolved error when starting csf:"
  cat "$d/csf.error"
  echo "You need to restart csf successfully to remove this warning, or delete /etc/csf/csf.error"
  exit 1
fi
fail=
for mode in exit warning csferror start append rewrite; do
  if [ -e "$d/fail-$mode-once" ]; then rm -f "$d/fail-$mode-once"; fail=$mode; fi
  if [ -e "$d/fail-$mode" ]; then fail=$mode; fi
done
if grep -qs 'd=99999' "$d/csf.allow"; then fail=start; fi
start_failed() {
  echo "Error: iptables-restore failed at line 42 (Invalid port), at line 3377"
  echo "Error: iptables-restore failed at line 42, at line 3377 in /usr/sbin/csf" > "$d/csf.error"
  echo open > "$d/firewall"
  exit 1
}
case "$fail" in
  exit) echo "Error: Invalid port [99999] in /etc/csf/csf.allow at line 7"; echo "csf: FASTSTART failed" >&2; exit 1 ;;
  warning) echo "*Error* File does not exist: [/etc/crontab], at line 33" ;;
  csferror) echo "Error: iptables-restore failed" > "$d/csf.error"; echo "csf restarted"; exit 0 ;;
  start) start_failed ;;
  append) echo "192.0.2.99 # Manually allowed: 192.0.2.99 - Fri Nov 27 09:42:00 2026" >> "$d/csf.allow"; start_failed ;;
  rewrite) sed -i '/192.0.2.55/d' "$d/csf.allow"; start_failed ;;
esac
rm -f "$d/csf.error"
echo drop > "$d/firewall"
echo "csf and lfd restarted"
exit 0
"#;

/// What the stand-in appends for `fail-append`.
const APPENDED: &[u8] = b"192.0.2.99 # Manually allowed: 192.0.2.99 - Fri Nov 27 09:42:00 2026\n";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A csf directory holding the fixtures, csf.conf for production, and the stand-in.
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        env.write("csf.allow", ALLOW);
        env.write("csf.ignore", IGNORE);
        env.write("csf.conf", CONF_PRODUCTION);
        env.write("csf-reload", STAND_IN.as_bytes());
        fs::set_permissions(env.path("csf-reload"), fs::Permissions::from_mode(0o755)).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.path(name), bytes).unwrap();
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.path(name)).ok()
    }

    fn backend_with(&self, spec: RuleSpec, ignore: bool) -> CsfBackend {
        let options = CsfOptions {
            dir: self.dir.path().to_path_buf(),
            ignore,
            reload: vec![
                self.path("csf-reload").display().to_string(),
                "-ra".to_string(),
            ],
            recover: vec![
                self.path("csf-reload").display().to_string(),
                "-r".to_string(),
            ],
        };
        CsfBackend::new(options, spec, Runner::new())
    }

    fn backend(&self) -> CsfBackend {
        self.backend_with(RuleSpec::default(), true)
    }

    fn reloads(&self) -> usize {
        self.read("reload.log")
            .map(|b| String::from_utf8(b).unwrap().lines().count())
            .unwrap_or(0)
    }

    /// The stand-in's arguments, one run a line.
    fn log(&self) -> String {
        String::from_utf8(self.read("reload.log").unwrap_or_default()).unwrap()
    }

    /// `open` after a failed start, `drop` after a good one.
    fn firewall(&self) -> String {
        String::from_utf8(self.read("firewall").unwrap_or_default())
            .unwrap()
            .trim()
            .to_string()
    }

    /// Bytes and mtimes of every file in the directory, the stand-in's log and state excepted.
    fn snapshot(&self) -> Vec<(String, Vec<u8>, SystemTime)> {
        let mut out: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "reload.log" && e.file_name() != "firewall")
            .map(|e| {
                let p = e.path();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                    fs::metadata(&p).unwrap().modified().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn include(&self, kind: &str) -> String {
        format!("Include {}\n", self.path(kind).display())
    }
}

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| parse_cidr(s).unwrap()).collect()
}

/// One engine run: read, plan, apply; returns whether there was a plan.
fn sync(backend: &CsfBackend, desired: &AllowList) -> Result<bool, BackendError> {
    let live = backend.read()?;
    let Some(mut plan) = Plan::new(&live, desired) else {
        return Ok(false);
    };
    plan.origin = Some("cloudflare api, fetched 2026-11-27T09:40:00Z".to_string());
    backend.apply(&plan)?;
    let after = backend.read()?;
    assert_eq!(after.structure, Structure::Current, "after apply");
    assert_eq!(&after.entries, desired, "read back equals the plan");
    Ok(true)
}

fn assert_untouched(env: &Env, allow: &[u8], ignore: &[u8]) {
    assert_eq!(env.read("csf.allow").as_deref(), Some(allow), "csf.allow");
    assert_eq!(
        env.read("csf.ignore").as_deref(),
        Some(ignore),
        "csf.ignore"
    );
}

#[test]
fn first_sync_writes_both_files_and_includes_then_reloads_once() {
    let env = Env::new();
    let backend = env.backend();
    assert_eq!(backend.name(), "csf");
    let live = backend.read().unwrap();
    assert_eq!(live.structure, Structure::Absent);
    // csf.conf.production opens 80 and 443 to everyone in TCP_IN and TCP6_IN.
    assert_eq!(live.warnings.len(), 1, "{:?}", live.warnings);
    assert!(
        live.warnings[0].starts_with("the allowlist does not restrict")
            && live.warnings[0].contains("TCP_IN opens 80,443 and TCP6_IN opens 80,443"),
        "{:?}",
        live.warnings
    );

    assert!(sync(&backend, &cloudflare()).unwrap());
    assert_eq!(env.reloads(), 1);
    assert_eq!(env.read("reload.log").unwrap(), b"-ra\n");
    let allow = env.read("csf.allow").unwrap();
    assert_eq!(allow, [env.include(ALLOW_FILE).as_bytes(), ALLOW].concat());
    let ignore = env.read("csf.ignore").unwrap();
    assert_eq!(
        ignore,
        [env.include(IGNORE_FILE).as_bytes(), IGNORE].concat()
    );
    let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
    assert!(ours.contains("# Source: cloudflare api, fetched 2026-11-27T09:40:00Z\n"));
    assert_eq!(
        ours.lines().filter(|l| l.starts_with("tcp|in|d=")).count(),
        44
    );
    assert!(ours.contains("\ntcp|in|d=443|s=2a06:98c0::/29\n"));
    let mode = fs::metadata(env.path(ALLOW_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ignored = String::from_utf8(env.read(IGNORE_FILE).unwrap()).unwrap();
    assert!(ignored.contains("\n173.245.48.0/20\n") && !ignored.contains('|'));
}

#[test]
fn no_op_sync_touches_nothing_and_does_not_reload() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    let before = env.snapshot();
    std::thread::sleep(std::time::Duration::from_millis(20));

    assert!(!sync(&backend, &cloudflare()).unwrap(), "no plan");
    // Even a plan handed over again (same list, same origin) writes nothing and reloads nothing.
    let live = backend.read().unwrap();
    let plan = Plan {
        before: live.entries.clone(),
        after: live.entries.clone(),
        add: AllowList::new(),
        remove: AllowList::new(),
        rebuild: None,
        origin: Some("cloudflare api, fetched 2026-11-27T09:40:00Z".to_string()),
    };
    backend.apply(&plan).unwrap();
    assert_eq!(env.reloads(), 1);
    assert_eq!(env.snapshot(), before, "bytes and mtimes unchanged");
}

#[test]
fn a_run_killed_between_writing_and_reloading_is_reloaded_by_the_next() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    assert_eq!(env.reloads(), 1);
    assert!(
        env.read(cfa_csf::PENDING_FILE).is_none(),
        "removed after the reload"
    );
    // What a run killed after writing its files and before its reload leaves behind.
    env.write(cfa_csf::PENDING_FILE, b"# pending\n");
    let live = backend.read().unwrap();
    let Structure::Outdated(why) = &live.structure else {
        panic!("{:?}", live.structure)
    };
    assert!(why.contains("not reloaded"), "{why}");
    assert!(sync(&backend, &cloudflare()).unwrap(), "a plan: reload");
    assert_eq!(
        env.reloads(),
        2,
        "the files were current, csf is reloaded anyway"
    );
    assert!(env.read(cfa_csf::PENDING_FILE).is_none());
    assert!(!sync(&backend, &cloudflare()).unwrap(), "then a no-op");
    assert_eq!(env.reloads(), 2);
}

#[test]
fn a_failed_reload_keeps_the_pending_mark_only_while_csf_is_behind() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    // The reload and the reload of the restored files both fail: csf is behind its files.
    env.write("fail-exit", b"");
    let mut changed = cloudflare();
    changed.insert("198.51.100.0/24".parse().unwrap());
    assert!(sync(&backend, &changed).is_err());
    assert!(
        env.read(cfa_csf::PENDING_FILE).is_some(),
        "csf may not hold what the files say"
    );
    fs::remove_file(env.path("fail-exit")).unwrap();
    assert!(
        sync(&backend, &cloudflare()).unwrap(),
        "the next run reloads"
    );
    assert!(env.read(cfa_csf::PENDING_FILE).is_none());
}

#[test]
fn changed_list_rewrites_and_reloads() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    let allow_before = env.read("csf.allow").unwrap();

    let mut changed = cloudflare();
    changed.v4.remove(&"104.16.0.0/13".parse().unwrap());
    changed.insert(parse_cidr("104.16.0.0/12").unwrap());
    assert!(sync(&backend, &changed).unwrap());
    assert_eq!(env.reloads(), 2);
    let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
    assert!(ours.contains("s=104.16.0.0/12\n") && !ours.contains("s=104.16.0.0/13\n"));
    assert_eq!(
        env.read("csf.allow").unwrap(),
        allow_before,
        "Include already right"
    );
}

/// A reload failing the way `flag` makes it fail restores every file, brings csf back up with
/// the arguments in `again` (the reload's `-ra`, or the recovery's `-r` when csf left csf.error)
/// and says so.
fn reload_failure_restores(flag: &str, expect_in_error: &str, again: &str, how: &str) {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    let before = env.snapshot();

    env.write(flag, b"");
    let err = sync(&backend, &list(&["173.245.48.0/20"])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Command { .. }), "{err:?}");
    assert!(msg.contains(expect_in_error), "{msg}");
    assert!(
        msg.contains(&format!("the previous files were restored and {how}")),
        "{msg}"
    );
    assert_eq!(env.log(), format!("-ra\n-ra\n{again}\n"));
    assert_eq!(env.firewall(), "drop");
    let after: Vec<_> = env
        .snapshot()
        .into_iter()
        .map(|(name, bytes, _)| (name, bytes))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .map(|(name, bytes, _)| (name, bytes))
        .collect();
    assert_eq!(after, before, "every file as it was, no csf.error left");
    assert_eq!(backend.read().unwrap().entries, cloudflare());
}

#[test]
fn reload_failure_by_exit_code_restores() {
    reload_failure_restores(
        "fail-exit-once",
        "Invalid port [99999]",
        "-ra",
        "csf reloaded",
    );
}

#[test]
fn reload_failure_leaving_csf_error_restores_and_recovers() {
    reload_failure_restores(
        "fail-csferror-once",
        "iptables-restore failed",
        "-r",
        "csf recovered with `",
    );
}

/// The FASTSTART failure: exit 1, csf.error written, firewall open, `-ra` refused from then on.
/// Retrying `-ra` can never succeed; `-r` with the previous files does.
#[test]
fn failed_start_is_recovered_with_csf_r() {
    reload_failure_restores(
        "fail-start-once",
        "csf said: Error: iptables-restore failed at line 42",
        "-r",
        "csf recovered with `",
    );
}

#[test]
fn failed_recovery_keeps_both_causes() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-start", b"");
    let err = sync(&backend, &cloudflare()).unwrap_err();
    let BackendError::UndoFailed { cause, undo } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**cause, BackendError::Command { ref action, .. }
            if action.starts_with("reloading csf after writing the allowlist")
                && action.contains("the previous files were restored")),
        "{cause:?}"
    );
    assert!(
        matches!(**undo, BackendError::Command { ref action, .. }
            if action.starts_with("recovering csf with the previous files restored")),
        "{undo:?}"
    );
    assert!(err.to_string().contains("check it now"), "{err}");
    assert_eq!(env.log(), "-ra\n-r\n");
    assert_eq!(env.firewall(), "open");
    assert_untouched(&env, ALLOW, IGNORE);
    assert!(env.read(ALLOW_FILE).is_none() && env.read(IGNORE_FILE).is_none());
}

/// csf prints `*Error*` lines for things that do not stop it and exits 0 with the firewall up:
/// that is a working reload, not a failure to roll back.
#[test]
fn error_words_in_a_successful_reload_are_not_a_failure() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-warning", b"");
    assert!(sync(&backend, &cloudflare()).unwrap());
    assert_eq!(env.log(), "-ra\n");
    assert_eq!(env.firewall(), "drop");
    assert!(env.read(ALLOW_FILE).is_some());
    assert!(sync(&backend, &list(&["173.245.48.0/20"])).unwrap());
    assert_eq!(env.reloads(), 2);
}

#[test]
fn failed_first_sync_deletes_the_files_it_created() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-exit-once", b"");
    sync(&backend, &cloudflare()).unwrap_err();
    assert_untouched(&env, ALLOW, IGNORE);
    assert!(env.read(ALLOW_FILE).is_none() && env.read(IGNORE_FILE).is_none());
    assert_eq!(backend.read().unwrap().structure, Structure::Absent);
}

#[test]
fn reload_that_keeps_failing_says_so() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-exit", b"");
    let err = sync(&backend, &cloudflare()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::UndoFailed { .. }), "{err:?}");
    assert!(
        msg.contains("ALSO FAILED (reloading csf with the previous files restored"),
        "{msg}"
    );
    assert!(msg.contains("check it now"), "{msg}");
    assert_eq!(env.log(), "-ra\n-ra\n");
    assert_untouched(&env, ALLOW, IGNORE);
}

#[test]
fn purge_restores_csf_allow_and_ignore_byte_for_byte() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    sync(&backend, &list(&["173.245.48.0/20", "2400:cb00::/32"])).unwrap();
    backend.purge().unwrap();
    assert_untouched(&env, ALLOW, IGNORE);
    assert!(env.read(ALLOW_FILE).is_none() && env.read(IGNORE_FILE).is_none());
    assert_eq!(env.reloads(), 3);
    assert_eq!(backend.read().unwrap().structure, Structure::Absent);

    backend.purge().unwrap();
    assert_eq!(env.reloads(), 3, "nothing left to remove: no reload");
}

#[test]
fn crlf_file_without_final_newline_survives_sync_and_purge() {
    let env = Env::new();
    env.write("csf.allow", ALLOW_CRLF);
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    let allow = env.read("csf.allow").unwrap();
    assert!(allow.starts_with(env.include(ALLOW_FILE).trim_end().as_bytes()));
    assert!(allow.ends_with(ALLOW_CRLF));
    backend.purge().unwrap();
    assert_untouched(&env, ALLOW_CRLF, IGNORE);
}

#[test]
fn operator_lines_added_after_sync_are_preserved() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    // What `csf -a` does: append to csf.allow.
    let manual = b"192.0.2.77 # Manually allowed: 192.0.2.77 - Fri Nov 27 09:41:00 2026\n";
    let mut allow = env.read("csf.allow").unwrap();
    allow.extend_from_slice(manual);
    env.write("csf.allow", &allow);

    assert!(!sync(&backend, &cloudflare()).unwrap(), "still current");
    sync(&backend, &list(&["173.245.48.0/20"])).unwrap();
    assert_eq!(env.read("csf.allow").unwrap(), allow);
    backend.purge().unwrap();
    assert_untouched(&env, &[ALLOW, manual].concat(), IGNORE);
}

/// `ports: []` is every port of the configured protocol, inbound only: a plain CIDR line would
/// make csf accept every protocol from the range and let the host send anything to it.
#[test]
fn empty_ports_allow_every_port_of_the_protocol_inbound_only() {
    let env = Env::new();
    for (protocol, per_net) in [
        (Protocol::Tcp, vec!["tcp"]),
        (Protocol::Udp, vec!["udp"]),
        (Protocol::Both, vec!["tcp", "udp"]),
    ] {
        let spec = RuleSpec {
            ports: vec![],
            protocol,
            ..RuleSpec::default()
        };
        let backend = env.backend_with(spec, true);
        sync(&backend, &cloudflare()).unwrap();
        let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
        let entries: Vec<&str> = ours.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(entries.len(), cloudflare().len() * per_net.len(), "{ours}");
        for line in &entries {
            let proto = line.split('|').next().unwrap();
            assert!(per_net.contains(&proto), "{line}");
            assert!(
                line.starts_with(&format!("{proto}|in|d=1_65535|s=")),
                "{line}"
            );
        }
        assert!(
            ours.contains("\ntcp|in|d=1_65535|s=173.245.48.0/20\n") == (protocol != Protocol::Udp)
        );
        assert!(
            !sync(&backend, &cloudflare()).unwrap(),
            "{protocol:?}: current"
        );
    }
}

#[test]
fn plain_cidr_allow_file_of_an_older_version_is_outdated_and_rewritten() {
    let env = Env::new();
    let spec = RuleSpec {
        ports: vec![],
        ..RuleSpec::default()
    };
    let backend = env.backend_with(spec, true);
    sync(&backend, &cloudflare()).unwrap();
    // What older versions wrote for `ports: []`.
    let old = "# Generated by cf-allowlist: do not edit, the next sync overwrites this file.\n\
         # 2 ranges, every port\n173.245.48.0/20\n2400:cb00::/32\n";
    env.write(ALLOW_FILE, old.as_bytes());
    let live = backend.read().unwrap();
    let Structure::Outdated(why) = &live.structure else {
        panic!("{live:?}")
    };
    assert!(
        why.contains("plain CIDR") && why.contains("tcp/every port"),
        "{why}"
    );
    assert!(sync(&backend, &cloudflare()).unwrap());
    let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
    assert!(!ours.lines().any(|l| l == "173.245.48.0/20"), "{ours}");
    assert!(
        ours.contains("\ntcp|in|d=1_65535|s=2400:cb00::/32\n"),
        "{ours}"
    );
}

#[test]
fn changed_rule_spec_is_outdated_and_rebuilt() {
    let env = Env::new();
    sync(&env.backend(), &cloudflare()).unwrap();
    let spec = RuleSpec {
        ports: vec![443],
        protocol: Protocol::Both,
        ..RuleSpec::default()
    };
    let backend = env.backend_with(spec, true);
    let live = backend.read().unwrap();
    let Structure::Outdated(why) = &live.structure else {
        panic!("{live:?}")
    };
    assert!(
        why.contains("tcp/80,tcp/443") && why.contains("tcp/443,udp/443"),
        "{why}"
    );
    assert!(sync(&backend, &cloudflare()).unwrap());
    let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
    assert!(ours.contains("udp|in|d=443|s=173.245.48.0/20\n") && !ours.contains("d=80|"));
}

#[test]
fn ignore_false_leaves_csf_ignore_alone_and_switching_removes_ours() {
    let env = Env::new();
    let backend = env.backend_with(RuleSpec::default(), false);
    sync(&backend, &cloudflare()).unwrap();
    assert_eq!(env.read("csf.ignore").unwrap(), IGNORE);
    assert!(env.read(IGNORE_FILE).is_none());

    let with_ignore = env.backend();
    assert!(sync(&with_ignore, &cloudflare()).unwrap());
    assert!(env.read(IGNORE_FILE).is_some());

    let live = backend.read().unwrap();
    assert!(matches!(live.structure, Structure::Outdated(_)), "{live:?}");
    assert!(sync(&backend, &cloudflare()).unwrap());
    assert_eq!(env.read("csf.ignore").unwrap(), IGNORE);
    assert!(env.read(IGNORE_FILE).is_none());
}

#[test]
fn damaged_include_lines_are_repaired() {
    let env = Env::new();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    // Our line duplicated at the end, and the allow file included from csf.ignore (the first
    // spec's layout).
    let mut allow = env.read("csf.allow").unwrap();
    allow.extend_from_slice(env.include(ALLOW_FILE).as_bytes());
    env.write("csf.allow", &allow);
    env.write(
        "csf.ignore",
        &[env.include(ALLOW_FILE).as_bytes(), IGNORE].concat(),
    );
    let live = backend.read().unwrap();
    let Structure::Outdated(why) = &live.structure else {
        panic!("{live:?}")
    };
    assert!(why.contains("csf.allow has 2 include line(s)"), "{why}");
    assert!(why.contains("csf.ignore has 1 include line(s)"), "{why}");
    assert!(sync(&backend, &cloudflare()).unwrap());
    assert_eq!(
        env.read("csf.allow").unwrap(),
        [env.include(ALLOW_FILE).as_bytes(), ALLOW].concat()
    );
    backend.purge().unwrap();
    assert_untouched(&env, ALLOW, IGNORE);
}

#[test]
fn foreign_file_at_our_path_is_refused_untouched() {
    let env = Env::new();
    env.write(ALLOW_FILE, b"1.2.3.4 # someone else's\n");
    let backend = env.backend();
    let err = backend.read().unwrap_err();
    assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("not written by cf-allowlist"));
    let plan = Plan::new(&cfa_core::Live::absent(), &cloudflare()).unwrap();
    assert!(backend.check(&plan).is_err());
    assert!(backend.apply(&plan).is_err());
    assert!(backend.purge().is_err());
    assert_eq!(env.read(ALLOW_FILE).unwrap(), b"1.2.3.4 # someone else's\n");
    assert_untouched(&env, ALLOW, IGNORE);
    assert_eq!(env.reloads(), 0);
}

#[test]
fn stale_csf_error_is_warned_about_and_blocks_changes() {
    let env = Env::new();
    env.write("csf.error", b"Error: something failed at line 1\n");
    let backend = env.backend();
    let live = backend.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains("csf.error")),
        "{:?}",
        live.warnings
    );
    let plan = Plan::new(&live, &cloudflare()).unwrap();
    let err = backend.apply(&plan).unwrap_err();
    assert!(err.to_string().contains("something failed"), "{err}");
    assert!(backend.check(&plan).is_err());
    assert_untouched(&env, ALLOW, IGNORE);
    assert!(env.read(ALLOW_FILE).is_none());
    assert_eq!(env.reloads(), 0);
}

#[test]
fn dry_run_check_writes_nothing_and_runs_nothing() {
    let env = Env::new();
    let backend = env.backend();
    let before = env.snapshot();
    let live = backend.read().unwrap();
    backend
        .check(&Plan::new(&live, &cloudflare()).unwrap())
        .unwrap();
    assert_eq!(env.snapshot(), before);
    assert_eq!(env.reloads(), 0);
}

#[test]
fn csf_conf_warnings_reach_live() {
    let env = Env::new();
    env.write("csf.conf", CONF_TESTING);
    let live = env.backend().read().unwrap();
    // IPV6 = "0", TESTING = "1", and TCP_IN opening 80,443 (TCP6_IN does not count: IPv6 is off).
    assert_eq!(live.warnings.len(), 3, "{:?}", live.warnings);
    assert!(
        live.warnings[2].contains("TCP_IN opens 80,443 to every source")
            && !live.warnings[2].contains("TCP6_IN"),
        "{:?}",
        live.warnings
    );
    let v4 = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    assert_eq!(env.backend_with(v4, true).read().unwrap().warnings.len(), 2);
    assert!(cfa_csf::is_installed(env.dir.path()));
    fs::remove_file(env.path("csf.conf")).unwrap();
    assert!(!cfa_csf::is_installed(env.dir.path()));
    let live = env.backend().read().unwrap();
    assert!(
        live.warnings[0].contains("not found"),
        "{:?}",
        live.warnings
    );
}

#[test]
fn missing_csf_allow_is_created_and_purge_leaves_it_empty() {
    let env = Env::new();
    fs::remove_file(env.path("csf.allow")).unwrap();
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    assert_eq!(
        env.read("csf.allow").unwrap(),
        env.include(ALLOW_FILE).as_bytes()
    );
    backend.purge().unwrap();
    assert_eq!(env.read("csf.allow").unwrap(), b"");
}

#[test]
fn refused_inputs_write_nothing() {
    let env = Env::new();
    let port0 = RuleSpec {
        ports: vec![0, 80],
        ..RuleSpec::default()
    };
    assert!(sync(&env.backend_with(port0, true), &cloudflare()).is_err());
    assert!(sync(&env.backend(), &list(&["0.0.0.0/0"])).is_err());
    let relative = CsfBackend::new(
        CsfOptions {
            dir: Path::new("etc/csf").to_path_buf(),
            ..CsfOptions::default()
        },
        RuleSpec::default(),
        Runner::new(),
    );
    assert!(relative.read().is_err());
    assert_untouched(&env, ALLOW, IGNORE);
    assert_eq!(env.reloads(), 0);
}

#[test]
fn defaults_match_the_spec() {
    let o = CsfOptions::default();
    assert_eq!(o.dir, Path::new("/etc/csf"));
    assert!(o.ignore);
    assert_eq!(o.reload, ["csf", "-ra"]);
    assert_eq!(o.recover, ["csf", "-r"]);
}

/// The reported case: an operator's line csf cannot use. Reloading would fail, open the firewall
/// and leave csf refusing `-ra`; it is refused before anything is written or run.
#[test]
fn operator_line_csf_cannot_use_is_refused_before_anything() {
    let env = Env::new();
    let bad = [ALLOW, b"tcp|in|d=99999|s=192.0.2.10\n"].concat();
    env.write("csf.allow", &bad);
    let backend = env.backend();
    let live = backend.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains("d=99999")),
        "{:?}",
        live.warnings
    );
    let before = env.snapshot();
    let err = sync(&backend, &cloudflare()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
    let expected = format!(
        "{} line 28 \"tcp|in|d=99999|s=192.0.2.10\": the port 99999 is out of range (1-65535)",
        env.path("csf.allow").display()
    );
    assert!(msg.contains(&expected), "{msg}");
    let plan = Plan::new(&live, &cloudflare()).unwrap();
    assert!(backend.check(&plan).is_err(), "a dry run refuses too");
    assert_eq!(env.reloads(), 0);
    assert_eq!(env.snapshot(), before, "nothing written");
    assert!(env.read("csf.error").is_none());
    assert_eq!(env.firewall(), "");

    // Fixed by the operator: the sync goes through.
    env.write("csf.allow", ALLOW);
    assert!(sync(&backend, &cloudflare()).unwrap());
    // A bad line added later blocks purge as well: purge reloads csf too.
    let mut allow = env.read("csf.allow").unwrap();
    allow.extend_from_slice(b"tcp|in|d=22|s=192.0.2.300\n");
    env.write("csf.allow", &allow);
    let err = backend.purge().unwrap_err();
    assert!(err.to_string().contains("192.0.2.300"), "{err}");
    assert_eq!(env.reloads(), 1);
}

#[test]
fn bad_lines_in_included_files_are_refused_and_in_csf_ignore_warned() {
    let env = Env::new();
    let extra = env.path("extra.allow");
    env.write(
        "extra.allow",
        b"# included by the operator\ntcp|in|d=22,2222_99999|s=192.0.2.10\n",
    );
    env.write(
        "csf.allow",
        &[format!("Include {}\n", extra.display()).as_bytes(), ALLOW].concat(),
    );
    env.write(
        "csf.ignore",
        &[IGNORE, b"\ntcp|in|d=22|s=192.0.2.10\n"].concat(),
    );
    let err = sync(&env.backend(), &cloudflare()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{} line 2 \"tcp|in|d=22,2222_99999|s=192.0.2.10\": the port 99999 is out of range",
            extra.display()
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("csf.ignore line"),
        "csf.ignore's line does not block: {msg}"
    );
    assert_eq!(env.reloads(), 0);
    assert!(env.read(ALLOW_FILE).is_none());

    // A bad csf.ignore line alone cannot stop csf from starting (only lfd reads that file, and
    // skips the line): it is warned about, and the sync goes on.
    env.write("csf.allow", ALLOW);
    let live = env.backend().read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w
            .contains(&format!("{} line 8", env.path("csf.ignore").display()))
            && w.contains("lfd reads csf.ignore as plain addresses only")),
        "{:?}",
        live.warnings
    );
    assert!(sync(&env.backend(), &cloudflare()).unwrap());
    assert_eq!(env.reloads(), 1);
}

/// Non-ASCII operator lines (comments in any language, a NEL byte) used to panic on every
/// sync, read and purge.
#[test]
fn non_ascii_operator_lines_survive_sync_and_purge() {
    let env = Env::new();
    let allow = [
        "# Офис\n1.2.3.4 # Straße\n  include  ünïcödé\n# café ☕\n".as_bytes(),
        ALLOW,
    ]
    .concat();
    env.write("csf.allow", &allow);
    let backend = env.backend();
    assert_eq!(backend.read().unwrap().structure, Structure::Absent);
    sync(&backend, &cloudflare()).unwrap();
    assert!(env.read("csf.allow").unwrap().ends_with(&allow));
    backend.purge().unwrap();
    assert_untouched(&env, &allow, IGNORE);
}

#[test]
fn restrict_is_refused_while_csf_conf_opens_the_ports_to_everyone() {
    let env = Env::new();
    let restrict = RuleSpec {
        restrict: true,
        ..RuleSpec::default()
    };
    let backend = env.backend_with(restrict.clone(), true);
    let live = backend.read().unwrap();
    assert!(
        live.warnings
            .iter()
            .any(|w| w.starts_with("restrict: true is not in force")),
        "{:?}",
        live.warnings
    );
    let plan = Plan::new(&live, &cloudflare()).unwrap();
    for err in [
        backend.check(&plan).unwrap_err(),
        backend.apply(&plan).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
        assert!(
            msg.contains("TCP_IN opens 80,443 and TCP6_IN opens 80,443")
                && msg.contains("remove those ports from TCP_IN and TCP6_IN and restart csf"),
            "{msg}"
        );
    }
    assert_untouched(&env, ALLOW, IGNORE);
    assert!(env.read(ALLOW_FILE).is_none());
    assert_eq!(env.reloads(), 0);

    // With 80 and 443 closed in csf.conf, csf's DROP policy plus our lines restrict: accepted,
    // and no warning.
    env.write("csf.conf", CONF_RESTRICTED);
    let live = backend.read().unwrap();
    assert!(live.warnings.is_empty(), "{:?}", live.warnings);
    assert!(sync(&backend, &cloudflare()).unwrap());
    let unrestricted = env.backend().read().unwrap();
    assert!(
        unrestricted.warnings.is_empty(),
        "{:?}",
        unrestricted.warnings
    );

    // UDP ports are checked against UDP_IN, ranges included; TCP6_IN only with IPV6 = "1".
    let udp = RuleSpec {
        ports: vec![443, 32000],
        protocol: Protocol::Udp,
        restrict: true,
        ..RuleSpec::default()
    };
    let err = sync(&env.backend_with(udp, true), &cloudflare()).unwrap_err();
    assert!(err.to_string().contains("UDP_IN opens 32000,"), "{err}");
    env.write("csf.conf", CONF_TESTING);
    let v4_only_csf = env.backend_with(restrict, true).read().unwrap();
    let open: Vec<_> = v4_only_csf
        .warnings
        .iter()
        .filter(|w| w.contains("opens"))
        .collect();
    assert!(
        open.len() == 1
            && open[0].contains("TCP_IN opens 80,443 to")
            && !open[0].contains("TCP6_IN"),
        "{open:?}"
    );
}

#[test]
fn symlinked_csf_allow_stays_a_link() {
    let env = Env::new();
    fs::create_dir(env.path("real")).unwrap();
    let target = env.path("real/csf.allow");
    fs::write(&target, ALLOW).unwrap();
    fs::remove_file(env.path("csf.allow")).unwrap();
    std::os::unix::fs::symlink(&target, env.path("csf.allow")).unwrap();
    let is_link = || {
        fs::symlink_metadata(env.path("csf.allow"))
            .unwrap()
            .file_type()
            .is_symlink()
    };
    let backend = env.backend();
    sync(&backend, &cloudflare()).unwrap();
    assert!(is_link());
    assert_eq!(
        fs::read(&target).unwrap(),
        [env.include(ALLOW_FILE).as_bytes(), ALLOW].concat()
    );
    backend.purge().unwrap();
    assert!(is_link());
    assert_eq!(fs::read(&target).unwrap(), ALLOW);
}

/// `csf -a` appends to csf.allow; one run while our reload fails must not be lost when the
/// previous files are put back.
#[test]
fn line_appended_during_a_failed_reload_is_kept() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-append-once", b"");
    let err = sync(&backend, &cloudflare()).unwrap_err();
    assert!(matches!(err, BackendError::Command { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the previous files were restored and csf recovered"),
        "{err}"
    );
    assert_eq!(env.read("csf.allow").unwrap(), [ALLOW, APPENDED].concat());
    assert!(env.read(ALLOW_FILE).is_none());
    assert_eq!(env.log(), "-ra\n-r\n");
    assert_eq!(env.firewall(), "drop");
}

#[test]
fn file_rewritten_during_a_failed_reload_is_left_and_said() {
    let env = Env::new();
    let backend = env.backend();
    env.write("fail-rewrite-once", b"");
    let err = sync(&backend, &cloudflare()).unwrap_err();
    let BackendError::UndoFailed { undo, .. } = &err else {
        panic!("{err:?}")
    };
    let undo = undo.to_string();
    assert!(
        undo.contains(&format!(
            "{} changed while csf was reloading",
            env.path("csf.allow").display()
        )),
        "{undo}"
    );
    let allow = String::from_utf8(env.read("csf.allow").unwrap()).unwrap();
    assert!(allow.starts_with(&env.include(ALLOW_FILE)), "left as it is");
    assert!(!allow.contains("192.0.2.55"), "the operator's removal kept");
    assert_eq!(
        env.read("csf.ignore").unwrap(),
        IGNORE,
        "the others restored"
    );
    assert_eq!(env.log(), "-ra\n-r\n");
    assert_eq!(env.firewall(), "drop");
}

#[test]
fn families_follow_csf_ipv6_setting_and_the_spec() {
    let env = Env::new();
    assert_eq!(env.backend().families().unwrap(), [Family::V4, Family::V6]);
    let v4 = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    assert_eq!(
        env.backend_with(v4.clone(), true).families().unwrap(),
        [Family::V4]
    );
    env.write("csf.conf", CONF_TESTING);
    assert_eq!(env.backend().families().unwrap(), [Family::V4]);
    fs::remove_file(env.path("csf.conf")).unwrap();
    assert_eq!(env.backend().families().unwrap(), [Family::V4]);
    env.write("csf.conf", CONF_PRODUCTION);

    // An IPv6 entry handed over while IPv6 is not managed is not written.
    let backend = env.backend_with(v4, true);
    let plan = Plan::new(&backend.read().unwrap(), &cloudflare()).unwrap();
    backend.apply(&plan).unwrap();
    for file in [ALLOW_FILE, IGNORE_FILE] {
        let ours = String::from_utf8(env.read(file).unwrap()).unwrap();
        assert!(
            ours.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| !l.contains(':')),
            "{ours}"
        );
    }
    let live = backend.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert_eq!(live.entries, cloudflare().only(&[Family::V4]));
}

/// Timing, run on demand: `cargo test -p cfa-csf --release --test e2e -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run explicitly"]
fn bench_read_and_no_op_sync() {
    let env = Env::new();
    let backend = env.backend();
    let started = std::time::Instant::now();
    sync(&backend, &cloudflare()).unwrap();
    let first = started.elapsed();
    let runs = 1000;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        assert!(!sync(&backend, &cloudflare()).unwrap());
    }
    let per_read = started.elapsed() / runs;
    let started = std::time::Instant::now();
    backend.purge().unwrap();
    let purge = started.elapsed();
    println!(
        "csf bench: first sync (write 4 files + reload stand-in + read back) {first:?}; \
         no-op sync (read + plan) {per_read:?} each over {runs}; purge {purge:?}"
    );
    assert_eq!(env.reloads(), 2);
}
