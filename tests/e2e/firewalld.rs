//! The binary driving a real firewalld: `backend: auto` choosing it, sync, no-op, a reload by
//! the operator, purge; a firewalld that is installed but stopped is reported and passed over,
//! never started. The daemon runs in the test's namespace with a private bus, `/run`, `/var/log`
//! and configuration directory (the backend's own harness, `backends/firewalld/tests/daemon`).

use std::process::Command;

#[path = "../../backends/firewalld/tests/daemon/mod.rs"]
mod daemon;

use daemon::Daemons;

use crate::util::*;

/// Runs the binary in the namespace, reaching the private bus.
fn run(env: &Env, fw: &Daemons, args: &[&str]) -> Out {
    let out = Command::new("ip")
        .args(["netns", "exec", env.ns.name(), bin(), "-c"])
        .arg(env.path("config.yaml"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", fw.bus())
        .env_remove("CF_ALLOWLIST_LOG")
        .output()
        .expect("run cf-allowlist");
    Out::from(out)
}

#[test]
fn firewalld_auto_sync_noop_reload_purge() {
    let env = Env::new("fwd");
    let fw = Daemons::start(&env.ns);
    env.config("backend: auto\n");
    let j = run(
        &env,
        &fw,
        &["sync", "--output", "json", "--detailed-exitcode"],
    )
    .expect(2)
    .json();
    assert_eq!(
        j["backend"], "firewalld",
        "a running firewalld is chosen first"
    );
    assert_eq!(j["after"]["ipv4"].as_array().unwrap().len(), 15);
    assert_eq!(j["after"]["ipv6"].as_array().unwrap().len(), 7);
    let info = fw.cmd(&["--info-ipset=cf-allowlist-v4"]);
    assert!(info.contains("173.245.48.0/20"), "{info}");
    let permanent = fw.cmd(&["--permanent", "--info-ipset=cf-allowlist-v6"]);
    assert!(permanent.contains("2400:cb00::/32"), "{permanent}");
    assert_eq!(fw.kernel_set("cf-allowlist-v4").len(), 15);

    // No-op: nothing changes, and firewalld is not reloaded (a runtime-only change survives).
    fw.mark();
    let j = run(
        &env,
        &fw,
        &["sync", "--output", "json", "--detailed-exitcode"],
    )
    .expect(0)
    .json();
    assert_eq!(j["changed"], false);
    assert!(fw.marked(), "no reload on a no-op");

    // The operator reloads firewalld: the allowlist is in its permanent configuration.
    fw.cmd(&["--reload"]);
    run(&env, &fw, &["sync", "--detailed-exitcode"]).expect(0);
    assert_eq!(fw.kernel_set("cf-allowlist-v4").len(), 15);

    run(&env, &fw, &["purge"]).expect(0);
    for layer in [&[][..], &["--permanent"][..]] {
        let ipsets = fw.cmd(&[layer, &["--get-ipsets"]].concat());
        let policies = fw.cmd(&[layer, &["--get-policies"]].concat());
        assert!(!ipsets.contains("cf-allowlist"), "{ipsets}");
        assert!(!policies.contains("cf-allowlist"), "{policies}");
    }
}

#[test]
fn firewalld_installed_but_stopped_is_reported_and_never_started() {
    let env = Env::new("fwdoff");
    let mut fw = Daemons::start(&env.ns);
    fw.stop_daemon();
    env.config("backend: auto\n");
    let out = run(&env, &fw, &["sync", "--dry-run", "--output", "json"]);
    let j = out.expect(0).json();
    assert_eq!(j["backend"], "nftables", "{}", out.stderr);
    assert!(
        out.stderr
            .contains("firewalld is installed but not running"),
        "{}",
        out.stderr
    );
    // Named explicitly, it fails and says why.
    let out = run(&env, &fw, &["-b", "firewalld", "sync"]);
    out.expect(1);
    assert!(
        out.stderr.contains("firewalld is not running") && out.stderr.contains("never starts it"),
        "{}",
        out.stderr
    );
    assert!(!fw.try_cmd(&["--state"]).0, "nothing started firewalld");
}
