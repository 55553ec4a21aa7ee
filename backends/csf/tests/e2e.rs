//! End to end through the `Backend` trait on a temporary csf directory, with a recording
//! stand-in for `csf -ra` (csf itself is not installed here). The stand-in appends its arguments
//! to `reload.log`; flag files make it fail the way csf does: `fail-exit` (exit 1, "Error: ..."
//! on stdout), `fail-output` (exit 0 but "Error" in the output), `fail-csferror` (exit 0 and a
//! `csf.error` file, like a failed FASTSTART). A flag named `*-once` is consumed by the first
//! reload, so the restoring reload succeeds, as it would with csf and the previous files.

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
const CONF_TESTING: &[u8] = include_bytes!("fixtures/csf.conf");

const STAND_IN: &str = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$*" >> "$d/reload.log"
for mode in exit output csferror; do
  if [ -e "$d/fail-$mode-once" ]; then rm -f "$d/fail-$mode-once"; fail=$mode; fi
  if [ -e "$d/fail-$mode" ]; then fail=$mode; fi
done
case "$fail" in
  exit) echo "Error: Invalid port [99999] in /etc/csf/csf.allow at line 7"; echo "csf: FASTSTART failed" >&2; exit 1 ;;
  output) echo "Starting csf..."; echo "*Error* Invalid filter [tcp|in|d=99999|s=1.2.3.4]"; exit 0 ;;
  csferror) echo "Error: iptables-restore failed" > "$d/csf.error"; echo "csf restarted"; exit 0 ;;
esac
rm -f "$d/csf.error"
echo "csf and lfd restarted"
exit 0
"#;

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

    /// Bytes and mtimes of every file in the directory, the log excepted.
    fn snapshot(&self) -> Vec<(String, Vec<u8>, SystemTime)> {
        let mut out: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "reload.log")
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
    assert!(live.warnings.is_empty(), "{:?}", live.warnings);

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

fn reload_failure_restores(flag: &str, expect_in_error: &str) {
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
        msg.contains("the previous files were restored and csf reloaded"),
        "{msg}"
    );
    assert_eq!(env.reloads(), 3, "the failed reload and the restoring one");
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
    reload_failure_restores("fail-exit-once", "Invalid port [99999]");
}

#[test]
fn reload_failure_reported_only_in_output_restores() {
    reload_failure_restores("fail-output-once", "*Error* Invalid filter");
}

#[test]
fn reload_failure_leaving_csf_error_restores() {
    reload_failure_restores("fail-csferror-once", "iptables-restore failed");
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
    let msg = sync(&backend, &cloudflare()).unwrap_err().to_string();
    assert!(msg.contains("reloading csf again FAILED"), "{msg}");
    assert!(msg.contains("check the firewall now"), "{msg}");
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

#[test]
fn empty_ports_write_plain_cidrs() {
    let env = Env::new();
    let spec = RuleSpec {
        ports: vec![],
        ..RuleSpec::default()
    };
    let backend = env.backend_with(spec, true);
    sync(&backend, &cloudflare()).unwrap();
    let ours = String::from_utf8(env.read(ALLOW_FILE).unwrap()).unwrap();
    assert!(
        ours.contains("\n173.245.48.0/20\n2400:cb00::/32\n") || ours.contains("\n2400:cb00::/32\n")
    );
    assert!(!ours.contains('|'), "{ours}");
    assert_eq!(
        ours.lines().filter(|l| !l.starts_with('#')).count(),
        cloudflare().len()
    );
    assert!(!sync(&backend, &cloudflare()).unwrap());
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
    assert_eq!(live.warnings.len(), 2, "{:?}", live.warnings);
    let v4 = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    assert_eq!(env.backend_with(v4, true).read().unwrap().warnings.len(), 1);
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
