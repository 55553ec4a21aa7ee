//! Exit codes, JSON errors and the commands that do not touch a firewall.

use std::process::Command;

use crate::util::*;

fn bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cf-allowlist"))
        .args(args)
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(101),
        "cf-allowlist panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_64_help_exits_0() {
    assert_eq!(bin(&["frobnicate"]).0, 64);
    assert_eq!(bin(&["sync", "--no-such-flag"]).0, 64);
    assert_eq!(bin(&["sync", "--random-delay", "soon"]).0, 64);
    assert_eq!(bin(&["--help"]).0, 0);
    assert!(bin(&["--version"]).1.starts_with("cf-allowlist "));
}

#[test]
fn a_usage_error_with_output_json_prints_the_json_error() {
    for args in [
        &["--output", "json", "sync", "--no-such-flag"][..],
        &["sync", "--output=json", "--random-delay", "soon"][..],
    ] {
        let (code, stdout, stderr) = bin(args);
        assert_eq!(code, 64, "{args:?}");
        let j: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {stdout}"));
        assert_eq!(j["schema"], 1);
        assert_eq!(j["error"]["kind"], "usage");
        assert!(!j["error"]["message"].as_str().unwrap().is_empty());
        assert!(stderr.contains("error:"), "clap's message stays on stderr");
    }
    let (_, stdout, _) = bin(&["sync", "--no-such-flag"]);
    assert!(stdout.is_empty(), "text mode prints nothing on stdout");
}

#[test]
fn bad_config_exits_78_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "backend: nftables\nports: [80]\nrestict: true\n").unwrap();
    let (code, stdout, stderr) = bin(&["-c", path.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 78);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("restict") && stderr.contains("line 3"),
        "{stderr}"
    );
    let (code, stdout, _) = bin(&["-c", path.to_str().unwrap(), "sync", "--output", "json"]);
    assert_eq!(code, 78);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["schema"], 1);
    assert_eq!(j["error"]["kind"], "config");
    let (code, _, stderr) = bin(&["-c", "/nonexistent/cf-allowlist.yaml", "check-config"]);
    assert_eq!(code, 78);
    assert!(stderr.contains("/nonexistent/cf-allowlist.yaml"));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "ports: [443]\n").unwrap();
    let (code, stdout, _) = bin(&["-c", path.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("ports:\n- 443") && stdout.contains("max_removal: 0.5"),
        "{stdout}"
    );
    let (code, stdout, _) = bin(&[
        "-c",
        path.to_str().unwrap(),
        "check-config",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["config"]["ports"], serde_json::json!([443]));
}

#[test]
fn fetch_prints_the_list_and_writes_nothing() {
    let env = Env::new("fetch");
    let out = env.run(&["fetch"]);
    out.expect(0);
    let mut got: Vec<String> = out.stdout.lines().map(String::from).collect();
    got.sort();
    let mut want = lines(V4);
    want.extend(lines(V6));
    want.sort();
    assert_eq!(got, want);
    let j = env.run(&["fetch", "--output", "json"]).expect(0).json();
    assert_eq!(j["count"], 22);
    assert!(!env.state_file().exists());
    assert!(!env.ruleset().contains("cf_allowlist"));
}

#[test]
fn quiet_prints_nothing_on_success() {
    let env = Env::new("quiet");
    let out = env.run(&["-q", "sync"]);
    out.expect(0);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{out:?}",
        out = (&out.stdout, &out.stderr)
    );
}
