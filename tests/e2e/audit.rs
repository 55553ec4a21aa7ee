//! `audit`: every finding provoked on a real ruleset in a namespace and detected, each output
//! format, the Nagios exit codes, and a host with every finding at once.

use std::process::{Child, Stdio};

use serde_json::Value;
use testkit::tcp::Listener;
use testkit::NetNs;

use crate::util::*;

/// A listener bound to `addr` (one address, one family) on `port`, killed on drop.
struct Bound(Child);

impl Bound {
    fn start(ns: &NetNs, addr: &str, port: u16) -> Bound {
        let code = "import socket, sys, time\n\
            a, p = sys.argv[1], int(sys.argv[2])\n\
            s = socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET)\n\
            s.bind((a, p)); s.listen(); print('up', flush=True); time.sleep(600)\n";
        let mut child = ns
            .command("python3")
            .args(["-c", code, addr, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Read;
        let mut buf = [0u8; 3];
        child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        Bound(child)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn findings(j: &Value) -> Vec<(String, String)> {
    j["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {j}"))
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn kinds(j: &Value) -> Vec<String> {
    findings(j).into_iter().map(|(k, _)| k).collect()
}

fn finding<'a>(j: &'a Value, kind: &str) -> &'a Value {
    j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} finding: {j:#}"))
}

fn audit(env: &Env) -> (i32, Value) {
    let out = env.run(&["audit", "--output", "json"]);
    let j = out.json();
    (out.code, j)
}

/// A synced nftables host with a web server on 0.0.0.0:80 and :443 (both families).
fn clean_nft(tag: &str) -> (Env, Listener) {
    let env = Env::new(tag);
    env.run(&["sync"]).expect(0);
    let web = Listener::start(&env.ns, &[80, 443]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    (env, web)
}

#[test]
fn a_clean_host_is_ok_in_every_format() {
    let (env, _web) = clean_nft("auok");
    let (code, j) = audit(&env);
    assert_eq!(j["schema"], 1);
    assert_eq!(kinds(&j), Vec::<String>::new(), "{j:#}");
    assert_eq!(code, 0);
    let text = env.run(&["audit"]).expect(0).stdout.clone();
    assert!(text.contains("OK"), "{text}");
    let out = env.run(&["audit", "--output", "nagios"]);
    out.expect(0);
    assert!(
        out.stdout.starts_with("CF-ALLOWLIST OK - ")
            && out.stdout.contains("| ranges=22 age=0s blocked=0"),
        "{}",
        out.stdout
    );
    // audit writes nothing: the ruleset and the state are as they were.
    let ruleset = env.ruleset();
    let state = std::fs::read(env.state_file()).unwrap();
    env.run(&["audit"]);
    assert_eq!(env.ruleset(), ruleset);
    assert_eq!(std::fs::read(env.state_file()).unwrap(), state);
    assert!(!env.run(&["sync", "--output", "nagios"]).stderr.is_empty());
    assert_eq!(env.run(&["sync", "--output", "nagios"]).code, 64);
}

#[test]
fn a_fail2ban_style_nft_ban_on_one_cloudflare_address_is_blocked() {
    let (env, _web) = clean_nft("auf2b");
    env.ns.exec_ok(
        "nft",
        &["add table inet f2b-table; \
           add set inet f2b-table addr-set-nginx { type ipv4_addr; elements = { 104.16.5.7 } }; \
           add chain inet f2b-table f2b-chain { type filter hook input priority -1; policy accept; }; \
           add rule inet f2b-table f2b-chain tcp dport { 80, 443 } ip saddr @addr-set-nginx reject"],
    );
    let (code, j) = audit(&env);
    assert_eq!(code, 2, "{j:#}");
    let f = finding(&j, "blocked");
    assert_eq!(f["severity"], "critical");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains("104.16.5.7/32"),
        "the one address, not the /13: {evidence}"
    );
    assert!(
        evidence.contains("addr-set-nginx") || evidence.contains("f2b"),
        "{evidence}"
    );
    assert!(!evidence.contains("104.16.5.8"), "{evidence}");
    let out = env.run(&["audit", "--output", "nagios"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stdout.starts_with("CF-ALLOWLIST CRITICAL - "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("blocked=2"),
        "80 and 443: {}",
        out.stdout
    );
    let text = env.run(&["audit"]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout.starts_with("CRITICAL blocked:"),
        "{}",
        text.stdout
    );
}

#[test]
fn another_tables_drop_policy_blocks_everyone_despite_our_accept() {
    let (env, _web) = clean_nft("aupol");
    env.ns.exec_ok(
        "nft",
        &["add table inet web; add chain inet web input { type filter hook input priority 0; policy drop; }; \
           add rule inet web input tcp dport 22 accept"],
    );
    let (_, j) = audit(&env);
    let f = finding(&j, "blocked");
    let evidence = f["evidence"].to_string();
    assert!(evidence.contains("173.245.48.0/20 tcp/443"), "{evidence}");
    assert!(
        evidence.contains("policy") || evidence.contains("inet web input"),
        "{evidence}"
    );
    assert_eq!(
        f["evidence"].as_array().unwrap().len(),
        44,
        "22 ranges x 2 ports"
    );
}

#[test]
fn an_iptables_drop_of_an_f2b_ipset_and_a_csf_deny_rule_are_blocked() {
    for (i, variant) in ["nft", "legacy"].into_iter().enumerate() {
        let env = Env::new(&format!("auipt{i}"));
        env.config(&format!(
            "backend: iptables\niptables: {{ variant: {variant}, ipset: always }}\n"
        ));
        env.run(&["sync"]).expect(0);
        let _web = Listener::start(&env.ns, &[80, 443]);
        let ipt = format!("iptables-{variant}");
        env.ns.exec_ok("ipset", &["create", "f2b-sshd", "hash:ip"]);
        env.ns.exec_ok("ipset", &["add", "f2b-sshd", "162.158.1.1"]);
        env.ns.exec_ok(
            &ipt,
            &[
                "-I",
                "INPUT",
                "1",
                "-m",
                "set",
                "--match-set",
                "f2b-sshd",
                "src",
                "-j",
                "DROP",
            ],
        );
        // What csf's csf.deny becomes: a DENYIN chain dropping a range.
        env.ns.exec_ok(&ipt, &["-N", "DENYIN"]);
        env.ns.exec_ok(
            &ipt,
            &["-A", "DENYIN", "-s", "173.245.48.0/24", "-j", "DROP"],
        );
        env.ns.exec_ok(&ipt, &["-I", "INPUT", "1", "-j", "DENYIN"]);
        let (code, j) = audit(&env);
        assert_eq!(code, 2, "{variant}: {j:#}");
        let evidence = finding(&j, "blocked")["evidence"].to_string();
        assert!(evidence.contains("162.158.1.1/32"), "{variant}: {evidence}");
        assert!(evidence.contains("f2b-sshd"), "{variant}: {evidence}");
        assert!(
            evidence.contains("173.245.48.0/24"),
            "{variant}: {evidence}"
        );
        assert!(
            !evidence.contains("173.245.49.0"),
            "{variant}: the rest of the /20 gets in: {evidence}"
        );
    }
}

#[test]
fn listeners_loopback_only_and_none() {
    let env = Env::new("aulisten");
    env.run(&["sync"]).expect(0);
    let (_, j) = audit(&env);
    let mut k = kinds(&j);
    k.sort();
    assert_eq!(k, vec!["not_listening", "not_listening"], "{j:#}");
    let _local = Bound::start(&env.ns, "127.0.0.1", 443);
    let _web = Bound::start(&env.ns, "0.0.0.0", 80);
    let (_, j) = audit(&env);
    assert_eq!(kinds(&j), vec!["loopback_only"], "{j:#}");
    let f = finding(&j, "loopback_only");
    assert!(f["message"].as_str().unwrap().contains("443"));
    assert!(
        f["evidence"]
            .to_string()
            .contains("127.0.0.1:443 by python3["),
        "{f}"
    );
}

#[test]
fn drift_missing_and_a_tampered_set() {
    let (env, _web) = clean_nft("audrift");
    env.ns.exec_ok(
        "nft",
        &["delete element inet cf_allowlist allow_v4 { 104.16.0.0/13 }; add element inet cf_allowlist allow_v4 { 198.18.0.0/15 }"],
    );
    let (code, j) = audit(&env);
    assert_eq!(code, 2);
    let f = finding(&j, "drift");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains("missing: 104.16.0.0/13") && evidence.contains("extra: 198.18.0.0/15"),
        "{evidence}"
    );
    env.ns
        .exec_ok("nft", &["delete", "table", "inet", "cf_allowlist"]);
    let (_, j) = audit(&env);
    assert_eq!(finding(&j, "missing")["severity"], "critical");
    let out = env.run(&["audit", "--output", "nagios"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
}

#[test]
fn an_old_cache_is_stale_and_a_missing_state_file_too() {
    let (env, _web) = clean_nft("austale");
    let state = std::fs::read_to_string(env.state_file()).unwrap();
    let v: Value = serde_json::from_str(&state).unwrap();
    let fetched = v["sources"].as_object().unwrap().values().next().unwrap()["fetched_at"]
        .as_u64()
        .unwrap();
    std::fs::write(
        env.state_file(),
        state.replace(
            &format!("\"fetched_at\": {fetched}"),
            "\"fetched_at\": 1000",
        ),
    )
    .unwrap();
    let out = env.run(&["audit", "--offline", "--output", "json"]);
    let j = out.json();
    assert_eq!(out.code, 2);
    assert_eq!(kinds(&j), vec!["stale"], "{j:#}");
    let out = env.run(&["audit", "--offline", "--output", "nagios"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout
            .starts_with("CF-ALLOWLIST WARNING - 0 critical, 1 warning: stale ("),
        "{}",
        out.stdout
    );
    std::fs::remove_file(env.state_file()).unwrap();
    let (_, j) = audit(&env);
    assert!(kinds(&j).contains(&"stale".to_string()), "{j:#}");
}

#[test]
fn restrict_bypassed_by_an_operator_accept_before_ours() {
    // ufw: our deny is after our allows; an operator's `allow 443/tcp` inserted at the top wins.
    let env = Env::new("aurestr");
    env.ns.overlay_etc(&["ufw", "default"]);
    env.ns.exec_ok("ufw", &["--force", "enable"]);
    env.config("backend: ufw\nrestrict: true\n");
    env.run(&["sync"]).expect(0);
    let _web = Listener::start(&env.ns, &[80, 443]);
    let (_, j) = audit(&env);
    assert!(!kinds(&j).contains(&"not_restrictive".to_string()), "{j:#}");
    env.ns.exec_ok("ufw", &["insert", "1", "allow", "443/tcp"]);
    let (code, j) = audit(&env);
    assert_eq!(code, 2);
    let f = finding(&j, "not_restrictive");
    let evidence = f["evidence"].to_string();
    assert!(
        evidence.contains("tcp/443") && !evidence.contains("tcp/80 "),
        "{evidence}"
    );
    assert!(
        evidence.contains("ufw-user-input"),
        "the accepting rule is named: {evidence}"
    );

    // nftables: our table's drop is final whatever another table accepts: still restrictive.
    let (env, _web) = clean_nft("aurestn");
    env.config("restrict: true\n");
    env.run(&["sync"]).expect(0);
    env.ns.exec_ok(
        "nft",
        &["add table inet web; add chain inet web input { type filter hook input priority 0; policy accept; }; \
           add rule inet web input tcp dport 443 accept"],
    );
    let (_, j) = audit(&env);
    assert!(!kinds(&j).contains(&"not_restrictive".to_string()), "{j:#}");
}

#[test]
fn a_conflicting_firewall_and_every_finding_at_once() {
    let env = Env::new("auall");
    env.ns.overlay_etc(&["ufw", "default"]);
    env.ns.exec_ok("ufw", &["--force", "enable"]);
    env.config("backend: nftables\nrestrict: true\n");
    // No sync: our objects are missing, ufw (active) drops 80/443, nothing listens on 443 and
    // 80 on loopback only, no state file.
    let _local = Bound::start(&env.ns, "127.0.0.1", 80);
    let (code, j) = audit(&env);
    assert_eq!(code, 2);
    let mut k = kinds(&j);
    k.sort();
    k.dedup();
    for kind in [
        "blocked",
        "conflicting_firewall",
        "loopback_only",
        "missing",
        "not_listening",
        "stale",
    ] {
        assert!(k.contains(&kind.to_string()), "{kind} in {k:?}: {j:#}");
    }
    // Most severe first.
    let severities: Vec<String> = findings(&j).into_iter().map(|(_, s)| s).collect();
    let first_warning = severities.iter().position(|s| s == "warning").unwrap();
    assert!(
        severities[..first_warning].iter().all(|s| s == "critical"),
        "{severities:?}"
    );
    assert!(
        severities[first_warning..].iter().all(|s| s != "critical"),
        "{severities:?}"
    );
    let out = env.run(&["audit", "--output", "nagios"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.starts_with("CF-ALLOWLIST CRITICAL - "),
        "{}",
        out.stdout
    );
}

#[test]
fn nagios_unknown_when_the_audit_cannot_run() {
    let env = Env::new("auunk");
    std::fs::write(env.path("config.yaml"), "backend: pf\n").unwrap();
    let out = env.run(&["audit", "--output", "nagios"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert!(
        out.stdout.starts_with("CF-ALLOWLIST UNKNOWN - "),
        "{}",
        out.stdout
    );
}
