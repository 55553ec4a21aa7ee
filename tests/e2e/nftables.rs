//! `sync`, `purge` and the safety rules against real nftables.

use std::time::Duration;

use testkit::http::Reply;
use testkit::tcp::{connect, Lab};

use crate::util::*;

fn all_v4() -> Vec<String> {
    lines(V4)
}

#[test]
fn first_sync_then_no_op_writes_nothing() {
    let env = Env::new("first");
    let foreign = add_foreign_table(&env.ns);

    let out = env.run(&["sync", "--output", "json", "--detailed-exitcode"]);
    let j = out.expect(2).json();
    assert_eq!(j["schema"], 1);
    assert_eq!(j["changed"], true);
    assert_eq!(j["dry_run"], false);
    assert_eq!(j["backend"], "nftables");
    assert_eq!(j["source"][0]["from"], "network");
    assert_eq!(j["added"]["ipv4"].as_array().unwrap().len(), 15);
    assert_eq!(j["added"]["ipv6"].as_array().unwrap().len(), 7);
    assert_eq!(j["before"]["ipv4"].as_array().unwrap().len(), 0);
    assert_eq!(j["after"]["ipv6"].as_array().unwrap().len(), 7);
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
    assert_eq!(env.elements("cf_allowlist", "allow_v6"), lines(V6));
    assert!(env.state_file().exists(), "the good list is cached");

    let ruleset = env.ruleset();
    let state_mtime = std::fs::metadata(env.state_file())
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let out = env.run(&["sync", "--output", "json", "--detailed-exitcode"]);
    let j = out.expect(0).json();
    assert_eq!(j["changed"], false);
    assert_eq!(j["unchanged"], 22);
    assert_eq!(
        env.ruleset(),
        ruleset,
        "a no-op run changes nothing (handles included)"
    );
    assert_eq!(
        std::fs::metadata(env.state_file())
            .unwrap()
            .modified()
            .unwrap(),
        state_mtime,
        "nor the state file"
    );
    // The second request was conditional on the ETag of the first answer.
    let last = env
        .server()
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == API_PATH)
        .unwrap();
    assert_eq!(last.header("if-none-match"), Some("\"v1\""));
    assert!(last
        .header("user-agent")
        .unwrap()
        .starts_with("cf-allowlist/"));
    assert_eq!(
        env.ns
            .exec_ok("nft", &["-a", "list", "table", "inet", "web"]),
        foreign
    );
}

#[test]
fn not_modified_uses_the_cache_and_changes_nothing() {
    let env = Env::new("etag");
    env.run(&["sync"]).expect(0);
    let ruleset = env.ruleset();
    env.serve_api(Reply::status(304).header("ETag", "\"v1\""));
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["changed"], false);
    assert_eq!(j["source"][0]["from"], "not_modified");
    assert_eq!(j["degraded"], false);
    assert_eq!(env.ruleset(), ruleset);
}

#[test]
fn changed_list_removes_the_stale_range_and_adds_the_new() {
    let env = Env::new("changed");
    let foreign = add_foreign_table(&env.ns);
    env.serve_api(Reply::ok(api_2020()).header("ETag", "\"old\""));
    env.run(&["sync"]).expect(0);
    assert!(env
        .elements("cf_allowlist", "allow_v4")
        .contains(&"104.16.0.0/12".to_string()));

    env.serve_api(Reply::ok(API).header("ETag", "\"new\""));
    let out = env.run(&["sync", "--output", "json"]);
    let j = out.expect(0).json();
    assert_eq!(j["removed"]["ipv4"], serde_json::json!(["104.16.0.0/12"]));
    assert_eq!(
        j["added"]["ipv4"],
        serde_json::json!(["104.16.0.0/13", "104.24.0.0/14"])
    );
    assert_eq!(j["unchanged"], 20);
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
    assert_eq!(
        env.ns
            .exec_ok("nft", &["-a", "list", "table", "inet", "web"]),
        foreign
    );
    // Text output names the changes.
    env.serve_api(Reply::ok(api_2020()));
    let text = env.run(&["sync"]).expect(0).stdout.clone();
    assert!(
        text.contains("- 104.16.0.0/13") && text.contains("+ 104.16.0.0/12"),
        "{text}"
    );
}

#[test]
fn dry_run_changes_nothing_and_writes_no_cache() {
    let env = Env::new("dry");
    let before = env.ruleset();
    let out = env.run(&[
        "sync",
        "--dry-run",
        "--output",
        "json",
        "--detailed-exitcode",
    ]);
    let j = out.expect(2).json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["changed"], true);
    assert_eq!(j["added"]["ipv4"].as_array().unwrap().len(), 15);
    assert_eq!(env.ruleset(), before);
    assert!(!env.state_file().exists());
    assert!(!env.path("lock").exists(), "a dry run creates no lock file");
    // After a real sync, a dry run against a changed list shows the plan and keeps the set.
    env.run(&["sync"]).expect(0);
    env.serve_api(Reply::ok(api_2020()));
    let j = env
        .run(&["sync", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["removed"]["ipv4"].as_array().unwrap().len(), 2);
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
}

#[test]
fn bad_answers_leave_the_set_as_it_was() {
    let env = Env::new("bad");
    env.run(&["sync"]).expect(0);
    let ruleset = env.ruleset();
    let bad: Vec<(&str, Reply)> = vec![
        (
            "HTML",
            Reply::ok("<!DOCTYPE html><html><body>Attention Required!</body></html>")
                .header("Content-Type", "text/html"),
        ),
        (
            "success: false",
            Reply::ok(
                r#"{"success":false,"errors":[{"code":1000,"message":"boom"}],"result":null}"#,
            ),
        ),
        ("empty", Reply::ok("")),
        (
            "refused range",
            Reply::ok(api_with(&[("\"131.0.72.0/22\"", "\"0.0.0.0/0\"")])),
        ),
        (
            "too few",
            Reply::ok(
                r#"{"success":true,"result":{"ipv4_cidrs":["173.245.48.0/20","103.21.244.0/22"],"ipv6_cidrs":["2400:cb00::/32"]}}"#,
            ),
        ),
        (
            "leading zero",
            Reply::ok(api_with(&[("\"131.0.72.0/22\"", "\"010.1.2.0/24\"")])),
        ),
    ];
    for (what, reply) in bad {
        env.serve_api(reply);
        // The text lists are down: a bad answer must still fail, never fall back to the cache.
        env.server().route("/ips-v4", vec![Reply::status(503)]);
        let out = env.run(&["sync", "--output", "json"]);
        let j = out.expect(1).json();
        assert_eq!(j["error"]["kind"], "source", "{what}: {j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cloudflare"),
            "{what}: {j}"
        );
        assert_eq!(env.ruleset(), ruleset, "{what}: the firewall is untouched");
    }
}

#[test]
fn a_shrunk_list_is_refused_unless_forced() {
    let env = Env::new("shrink");
    env.run(&["sync"]).expect(0);
    let shrunk = r#"{"success":true,"result":{"ipv4_cidrs":["173.245.48.0/20","103.21.244.0/22","103.22.200.0/22"],"ipv6_cidrs":["2400:cb00::/32"]}}"#;
    env.serve_api(Reply::ok(shrunk));
    let out = env.run(&["sync", "--output", "json"]);
    let j = out.expect(1).json();
    assert_eq!(j["error"]["kind"], "guard");
    assert!(j["error"]["message"].as_str().unwrap().contains("--force"));
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
    let j = env
        .run(&["sync", "--force", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["removed"]["ipv4"].as_array().unwrap().len(), 12);
    assert_eq!(env.elements("cf_allowlist", "allow_v4").len(), 3);
}

#[test]
fn source_down_uses_the_cache_add_only() {
    let env = Env::new("down");
    env.run(&["sync"]).expect(0);
    // An entry the cached list does not have: a degraded run must not remove it.
    env.ns.exec_ok(
        "nft",
        &["add element inet cf_allowlist allow_v4 { 198.51.100.0/24 }"],
    );
    env.cloudflare_down(503);
    let out = env.run(&["sync", "--output", "json"]);
    let j = out.expect(0).json();
    assert_eq!(j["source"][0]["from"], "cache");
    assert_eq!(j["degraded"], true);
    assert_eq!(j["changed"], false);
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("unreachable") && warnings.contains("cached list"),
        "{warnings}"
    );
    assert!(
        out.stderr.contains("cached list"),
        "the warning is logged: {}",
        out.stderr
    );
    assert!(env
        .elements("cf_allowlist", "allow_v4")
        .contains(&"198.51.100.0/24".to_string()));
    // The set lost a range meanwhile: the cached list puts it back.
    env.ns.exec_ok(
        "nft",
        &["delete element inet cf_allowlist allow_v4 { 173.245.48.0/20 }"],
    );
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["added"]["ipv4"], serde_json::json!(["173.245.48.0/20"]));
    assert_eq!(j["removed"]["ipv4"], serde_json::json!([]));
}

#[test]
fn no_cache_and_no_network_serves_the_embedded_snapshot() {
    let env = Env::new("embed");
    // A closed port: connection refused, nothing cached.
    env.config("sources:\n  - cloudflare: { api_url: \"http://127.0.0.1:9/x\", text_urls: [\"http://127.0.0.1:9/a\"] }\n");
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["source"][0]["from"], "embedded");
    assert_eq!(j["degraded"], true);
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
    assert_eq!(env.elements("cf_allowlist", "allow_v6"), lines(V6));
    // --offline does the same without trying the network.
    let hits = env.server().requests().len();
    env.config("");
    let j = env
        .run(&["sync", "--offline", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["source"][0]["from"], "embedded");
    assert_eq!(env.server().requests().len(), hits);
}

#[test]
fn api_failure_falls_back_to_the_text_lists() {
    let env = Env::new("text");
    env.serve_api(Reply::status(503));
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["source"][0]["from"], "network");
    assert_eq!(j["degraded"], false);
    assert_eq!(env.elements("cf_allowlist", "allow_v4"), all_v4());
    assert!(j["warnings"].to_string().contains("text lists"));
}

#[test]
fn purge_removes_only_our_table() {
    let env = Env::new("purge");
    let foreign = add_foreign_table(&env.ns);
    env.run(&["sync"]).expect(0);
    let j = env
        .run(&["purge", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["changed"], true);
    assert_eq!(j["removed"]["ipv4"].as_array().unwrap().len(), 15);
    assert!(env.ruleset().contains("cf_allowlist"));
    let j = env.run(&["purge", "--output", "json"]).expect(0).json();
    assert_eq!(j["changed"], true);
    assert!(!env.ruleset().contains("cf_allowlist"));
    assert_eq!(
        env.ns
            .exec_ok("nft", &["-a", "list", "table", "inet", "web"]),
        foreign
    );
    let j = env.run(&["purge", "--output", "json"]).expect(0).json();
    assert_eq!(j["changed"], false);
}

#[test]
fn existing_table_mode() {
    let env = Env::new("exist");
    env.ns.exec_ok(
        "nft",
        &["add table inet filter; add chain inet filter input { type filter hook input priority 0; policy drop; }; \
           add rule inet filter input ct state established,related accept; add rule inet filter input iif lo accept; add rule inet filter input tcp dport 22 accept"],
    );
    env.config("nftables: { table: filter, family: inet, chain: input }\n");
    env.run(&["sync"]).expect(0);
    assert_eq!(env.elements("filter", "cf_allowlist_v4"), all_v4());
    let chain = env
        .ns
        .exec_ok("nft", &["list", "chain", "inet", "filter", "input"]);
    let rules: Vec<&str> = chain
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("accept"))
        .collect();
    assert!(
        rules[0].contains("@cf_allowlist_v4") && rules[0].contains("cf-allowlist"),
        "{chain}"
    );
    assert!(
        rules[2].starts_with("ct state"),
        "operator rules follow ours: {chain}"
    );
    assert!(!env.ruleset().contains("table inet cf_allowlist"));
    env.run(&["sync", "--detailed-exitcode"]).expect(0);
    env.run(&["purge"]).expect(0);
    let chain = env.ns.exec_ok("nft", &["list", "table", "inet", "filter"]);
    assert!(
        !chain.contains("cf_allowlist") && !chain.contains("cf-allowlist"),
        "{chain}"
    );
    assert!(chain.contains("tcp dport 22 accept"));
}

#[test]
fn restrict_mode_drops_others_in_our_table() {
    let env = Env::new("restrict");
    env.config("restrict: true\nports: [443]\n");
    env.run(&["sync"]).expect(0);
    let table = env
        .ns
        .exec_ok("nft", &["list", "table", "inet", "cf_allowlist"]);
    assert!(
        table.contains("tcp dport 443 ip saddr != @allow_v4 drop"),
        "{table}"
    );
    assert!(
        table.contains("tcp dport 443 ip6 saddr != @allow_v6 drop"),
        "{table}"
    );
    // Changing the configuration rebuilds the chain.
    env.config("restrict: false\nports: [443]\n");
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    assert!(j["rebuild"].is_string());
    assert!(!env
        .ns
        .exec_ok("nft", &["list", "table", "inet", "cf_allowlist"])
        .contains("drop"));
}

#[test]
fn extra_sources_are_merged_and_aggregated() {
    let env = Env::new("union");
    let file = env.path("extra.txt");
    std::fs::write(
        &file,
        "# ours\r\n10.20.0.0/25\r\n10.20.0.128/25\r\n104.16.1.0/24",
    )
    .unwrap();
    let base = env.server().url("");
    env.server()
        .route("/extra.txt", vec![Reply::ok("198.18.0.0/24\n")]);
    env.config(&format!(
        "sources:\n  - cloudflare: {{ api_url: \"{base}{API_PATH}\" }}\n  - file: \"{}\"\n  - cidrs: [\"203.0.113.7\"]\n",
        file.display()
    ));
    let j = env.run(&["sync", "--output", "json"]).expect(0).json();
    let v4 = env.elements("cf_allowlist", "allow_v4");
    assert!(
        v4.contains(&"10.20.0.0/24".to_string()),
        "adjacent halves merged: {v4:?}"
    );
    assert!(
        !v4.contains(&"104.16.1.0/24".to_string()),
        "covered by 104.16.0.0/13: {v4:?}"
    );
    assert!(v4.contains(&"203.0.113.7/32".to_string()));
    assert_eq!(j["source"].as_array().unwrap().len(), 3);
    // A remote plain list may not carry special-purpose ranges.
    env.config(&format!("sources:\n  - url: \"{base}/extra.txt\"\nguards: {{ min_entries: {{ ipv4: 1, ipv6: 0 }} }}\n"));
    let j = env.run(&["sync", "--output", "json"]).expect(1).json();
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("special-purpose"),
        "{j}"
    );
}

#[test]
fn a_second_run_waits_for_the_lock_then_gives_up() {
    let env = Env::new("lock");
    env.config("lock_timeout: 1s\n");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.path("lock"))
        .unwrap();
    lock.lock().unwrap();
    let started = std::time::Instant::now();
    let j = env.run(&["sync", "--output", "json"]).expect(1).json();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(j["error"]["kind"], "lock");
    assert!(j["error"]["message"]
        .as_str()
        .unwrap()
        .contains("another cf-allowlist run"));
    assert!(!env.ruleset().contains("cf_allowlist"));
    drop(lock);
    env.run(&["sync"]).expect(0);
}

#[test]
fn restrict_mode_drops_real_connections_from_strangers_only() {
    let env = Env::new("rstpkt");
    let client = testkit::NetNs::new("rstcli");
    let _lab = Lab::new(&env.ns, &client, &[443, 8443]);
    // Operator-listed ranges (documentation ranges are fine in `cidrs:`, refused only from remote lists).
    let [v4, v6] = Lab::ALLOWED_NETS;
    env.config(&format!(
        "sources:\n  - cidrs: [\"{v4}\", \"{v6}\"]\nrestrict: true\nports: [443]\n"
    ));
    env.run(&["sync"]).expect(0);
    for (src, dst) in Lab::ALLOWED {
        assert_eq!(connect(&client, src, dst, 443), "ok", "allowlisted {src}");
    }
    for (src, dst) in Lab::STRANGERS {
        assert_eq!(
            connect(&client, src, dst, 443),
            "timeout",
            "stranger {src} dropped"
        );
        assert_eq!(
            connect(&client, src, dst, 8443),
            "ok",
            "ports not governed stay open"
        );
    }
    env.run(&["purge"]).expect(0);
    for (src, dst) in Lab::STRANGERS {
        assert_eq!(
            connect(&client, src, dst, 443),
            "ok",
            "purge lifts the restriction"
        );
    }
}
