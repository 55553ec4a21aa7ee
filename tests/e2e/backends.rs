//! The binary driving iptables, ufw and csf, and `backend: auto` choosing among them.
//! (Each backend's own suite covers its details; these prove the engine wiring end to end.)

use std::os::unix::fs::PermissionsExt;

use crate::util::*;

fn iptables_save(env: &Env, tool: &str) -> String {
    env.ns
        .exec_ok(tool, &[])
        .lines()
        .filter(|l| !l.starts_with('#'))
        // Chain counters move with the test's own HTTP traffic; compare rules, not counters.
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{}\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect()
}

#[test]
fn iptables_all_variants_sync_noop_purge() {
    for (variant, ipset) in [
        ("nft", "always"),
        ("nft", "never"),
        ("legacy", "always"),
        ("legacy", "never"),
    ] {
        let env = Env::new(&format!("ipt{variant}{ipset}"));
        let save = format!("iptables-{variant}-save");
        let save6 = format!("ip6tables-{variant}-save");
        env.ns.exec_ok(
            &format!("iptables-{variant}"),
            &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        );
        env.config(&format!(
            "backend: iptables\niptables: {{ variant: {variant}, ipset: {ipset} }}\n"
        ));
        let j = env
            .run(&["sync", "--output", "json", "--detailed-exitcode"])
            .expect(2)
            .json();
        assert_eq!(j["backend"], "iptables", "{variant}/{ipset}");
        assert_eq!(j["after"]["ipv4"].as_array().unwrap().len(), 15);
        let v4 = iptables_save(&env, &save);
        assert!(
            v4.contains("-A INPUT -m comment --comment cf-allowlist -j CF-ALLOWLIST"),
            "{v4}"
        );
        assert!(
            v4.contains("--dport 22 -j ACCEPT"),
            "the operator's rule stays: {v4}"
        );
        if ipset == "always" {
            let sets = env.ns.exec_ok("ipset", &["list", "cf-allowlist-v4"]);
            assert!(sets.contains("173.245.48.0/20"), "{sets}");
        } else {
            assert!(v4.contains("-s 173.245.48.0/20"), "{v4}");
        }
        assert!(iptables_save(&env, &save6).contains("CF-ALLOWLIST"));
        let before = (iptables_save(&env, &save), iptables_save(&env, &save6));
        env.run(&["sync", "--detailed-exitcode"]).expect(0);
        assert_eq!(
            (iptables_save(&env, &save), iptables_save(&env, &save6)),
            before,
            "no-op"
        );
        env.serve_api(testkit::http::Reply::ok(api_2020()));
        let j = env.run(&["sync", "--output", "json"]).expect(0).json();
        assert_eq!(j["added"]["ipv4"], serde_json::json!(["104.16.0.0/12"]));
        env.run(&["purge"]).expect(0);
        let after = iptables_save(&env, &save);
        assert!(
            !after.contains("CF-ALLOWLIST") && after.contains("--dport 22 -j ACCEPT"),
            "{after}"
        );
        assert!(!env.ns.exec("ipset", &["list", "cf-allowlist-v4"]).0);
    }
}

#[test]
fn ufw_sync_noop_purge_and_auto_detection() {
    let env = Env::new("ufw");
    env.ns.overlay_etc(&["ufw", "default"]);
    env.ns.exec_ok("ufw", &["--force", "enable"]);
    env.ns.exec_ok("ufw", &["allow", "22/tcp"]);
    env.config("backend: auto\n");
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["backend"], "ufw", "an active ufw is chosen");
    let status = env.ns.exec_ok("ufw", &["status"]);
    assert!(
        status.contains("173.245.48.0/20") && status.contains("cf-allowlist"),
        "{status}"
    );
    let rules = env.ns.etc().join("ufw/user.rules");
    let bytes = std::fs::read(&rules).unwrap();
    let j = env
        .run(&["sync", "--output", "json", "--detailed-exitcode"])
        .expect(0)
        .json();
    assert_eq!(j["changed"], false);
    assert_eq!(
        std::fs::read(&rules).unwrap(),
        bytes,
        "no-op leaves user.rules alone"
    );
    env.run(&["purge"]).expect(0);
    let status = env.ns.exec_ok("ufw", &["status"]);
    assert!(
        !status.contains("cf-allowlist") && status.contains("22/tcp"),
        "{status}"
    );
}

#[test]
fn ufw_without_ipv6_manages_ipv4_only() {
    let env = Env::new("ufwnov6");
    env.ns.overlay_etc(&["ufw", "default"]);
    let defaults = env.ns.etc().join("default/ufw");
    let text = std::fs::read_to_string(&defaults)
        .unwrap()
        .replace("IPV6=yes", "IPV6=no");
    std::fs::write(&defaults, text).unwrap();
    env.ns.exec_ok("ufw", &["--force", "enable"]);
    env.config("backend: ufw\n");
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["after"]["ipv4"].as_array().unwrap().len(), 15);
    assert_eq!(j["after"]["ipv6"].as_array().unwrap().len(), 0);
    assert!(
        j["warnings"].to_string().contains("IPV6"),
        "{}",
        j["warnings"]
    );
    env.run(&["sync", "--detailed-exitcode"]).expect(0);
}

#[test]
fn csf_files_reload_and_auto_detection() {
    let env = Env::new("csf");
    let dir = env.path("csf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("csf.conf"), "TESTING = \"0\"\nIPV6 = \"1\"\n").unwrap();
    let operator = "# operator\ntcp|in|d=22|s=192.0.2.10\n";
    std::fs::write(dir.join("csf.allow"), operator).unwrap();
    std::fs::write(dir.join("csf.ignore"), "127.0.0.1\n").unwrap();
    let log = env.path("reloads.log");
    let reload = env.path("reload");
    std::fs::write(
        &reload,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&reload, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.config(&format!(
        "backend: auto\ncsf: {{ dir: {}, reload: [\"{}\", \"-ra\"] }}\n",
        dir.display(),
        reload.display()
    ));
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["backend"], "csf", "an installed csf is chosen");
    let ours = std::fs::read_to_string(dir.join("cf-allowlist.allow")).unwrap();
    assert!(ours.contains("tcp|in|d=443|s=173.245.48.0/20"), "{ours}");
    assert!(std::fs::read_to_string(dir.join("csf.allow"))
        .unwrap()
        .contains(operator));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    env.run(&["sync", "--detailed-exitcode"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        1,
        "no reload when nothing changed"
    );
    env.run(&["purge"]).expect(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("csf.allow")).unwrap(),
        operator
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("csf.ignore")).unwrap(),
        "127.0.0.1\n"
    );
}

#[test]
fn auto_falls_back_to_iptables_then_nftables() {
    let env = Env::new("auto");
    env.config("backend: auto\n");
    let j = env
        .run(&["sync", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["backend"], "nftables", "an empty host gets nftables");
    env.ns.exec_ok(
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let j = env
        .run(&["sync", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["backend"], "iptables", "rules in INPUT mean iptables");
    // -b overrides the configuration.
    let j = env
        .run(&["-b", "nftables", "sync", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["backend"], "nftables");
}

/// A csf directory with operator files and a reload stand-in that records its calls and fails
/// while `<dir>/fail` exists (printing an error the way csf does).
fn csf_dir(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = env.path("csf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("csf.conf"), "TESTING = \"0\"\nIPV6 = \"1\"\n").unwrap();
    std::fs::write(
        dir.join("csf.allow"),
        "# operator\r\ntcp|in|d=22|s=192.0.2.10",
    )
    .unwrap();
    std::fs::write(dir.join("csf.ignore"), "127.0.0.1\n").unwrap();
    let log = env.path("reloads.log");
    let reload = env.path("reload");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {log}\nif [ -e {dir}/fail ]; then echo 'Error: line 3 in cf-allowlist.allow: invalid port'; exit 1; fi\n",
        log = log.display(),
        dir = dir.display()
    );
    std::fs::write(&reload, script).unwrap();
    std::fs::set_permissions(&reload, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, log)
}

#[test]
fn csf_changed_list_failed_reload_and_all_ports() {
    let env = Env::new("csfchg");
    let (dir, log) = csf_dir(&env);
    let reload = env.path("reload");
    let config = |extra: &str| {
        env.config(&format!(
            "backend: csf\ncsf: {{ dir: {}, reload: [\"{}\"] }}\n{extra}",
            dir.display(),
            reload.display()
        ))
    };
    config("");
    let operator_allow = std::fs::read(dir.join("csf.allow")).unwrap();
    env.run(&["sync"]).expect(0);
    let reloads = || std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(reloads(), 1);

    // A changed list rewrites our file and reloads once.
    env.serve_api(testkit::http::Reply::ok(api_2020()));
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["added"]["ipv4"], serde_json::json!(["104.16.0.0/12"]));
    let ours = std::fs::read_to_string(dir.join("cf-allowlist.allow")).unwrap();
    assert!(
        ours.contains("s=104.16.0.0/12") && !ours.contains("s=104.24.0.0/14"),
        "{ours}"
    );
    assert_eq!(reloads(), 2);

    // The reload fails: the previous files come back, csf is reloaded again, exit 1 with csf's words.
    let files = || -> Vec<Vec<u8>> {
        [
            "cf-allowlist.allow",
            "csf.allow",
            "csf.ignore",
            "cf-allowlist.ignore",
        ]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
    };
    let before = files();
    std::fs::write(dir.join("fail"), "").unwrap();
    env.serve_api(testkit::http::Reply::ok(API));
    let j = env.run(&["sync", "--output", "json"]).expect(1).json();
    assert_eq!(j["error"]["kind"], "backend");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid port"),
        "{j}"
    );
    let after = files();
    assert_eq!(after, before, "a failed reload restores every file");
    assert_eq!(
        reloads(),
        4,
        "the failed reload and the reload of the restored files"
    );
    std::fs::remove_file(dir.join("fail")).unwrap();

    // ports: [] is every port of the protocol, inbound only: never a plain CIDR line, which
    // csf opens in and out for every protocol.
    config("ports: []\n");
    env.run(&["sync"]).expect(0);
    let ours = std::fs::read_to_string(dir.join("cf-allowlist.allow")).unwrap();
    assert!(
        ours.lines()
            .any(|l| l == "tcp|in|d=1_65535|s=173.245.48.0/20")
            && !ours.lines().any(|l| l == "173.245.48.0/20")
            && !ours.contains("d=443"),
        "{ours}"
    );
    env.run(&["purge"]).expect(0);
    assert_eq!(
        std::fs::read(dir.join("csf.allow")).unwrap(),
        operator_allow,
        "CRLF, no final newline: byte for byte"
    );
}

/// `families: [ipv4]` is one decision for the plan, the objects and the verification: iptables
/// converges (before, it failed verification on every run) and csf writes no IPv6 line.
#[test]
fn ipv4_only_is_honoured_by_iptables_and_csf() {
    let env = Env::new("v4only");
    env.config("backend: iptables\nfamilies: [ipv4]\niptables: { variant: nft, ipset: always }\n");
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["after"]["ipv6"], serde_json::json!([]), "{j}");
    assert_eq!(j["after"]["ipv4"].as_array().unwrap().len(), 15);
    let j = env
        .run(&["sync", "--output", "json", "--detailed-exitcode"])
        .expect(0)
        .json();
    assert_eq!(j["changed"], false, "{j}");
    assert!(!iptables_save(&env, "ip6tables-nft-save").contains("CF-ALLOWLIST"));
    assert!(!env.ns.exec("ipset", &["list", "cf-allowlist-v6"]).0);
    env.run(&["purge"]).expect(0);

    let (dir, _) = csf_dir(&env);
    env.config(&format!(
        "backend: csf\nfamilies: [ipv4]\ncsf: {{ dir: {}, reload: [\"{}\"] }}\n",
        dir.display(),
        env.path("reload").display()
    ));
    env.run(&["sync"]).expect(0);
    for file in ["cf-allowlist.allow", "cf-allowlist.ignore"] {
        let ours = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(ours.contains("173.245.48.0/20"), "{ours}");
        assert!(
            !ours.contains("2400:cb00::/32"),
            "{file} has no IPv6: {ours}"
        );
    }
    let j = env
        .run(&["sync", "--output", "json", "--detailed-exitcode"])
        .expect(0)
        .json();
    assert_eq!(j["changed"], false, "{j}");
}
