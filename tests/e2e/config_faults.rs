//! The configuration fault matrix through the binary: every key with a wrong type, a bad value or
//! a misspelling, and files that are not configurations at all. Each is refused with exit 78 by
//! `check-config`, `sync --dry-run` and `sync --output json` (a `config` error object), with a
//! message naming the key (and its line where the parser knows it), quickly, without a panic, and
//! without writing anything: no state directory, no lock file, no firewall change.
//!
//! Every run happens inside a network namespace, with the working directory in a temp dir and the
//! state and lock paths pointing there: a case that was wrongly accepted cannot touch the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cf_allowlist::config::Config;
use testkit::NetNs;

use crate::util::*;

/// How long one run may take: a parser that expands an alias bomb or reads a huge file blows this.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// The address space one run may use (`prlimit --as`): a run that needs more has blown memory.
const MEMORY_LIMIT: u64 = 1 << 30;

/// What the case gives the binary as its `-c` path.
enum Input {
    /// YAML text; the base keys (below) are appended unless the text sets them.
    Yaml(String),
    /// Bytes; the base keys are appended (so that a wrongly accepted file still points state and
    /// lock into the temp dir).
    Raw(Vec<u8>),
    /// Exact bytes, nothing appended (only for files that cannot parse as a mapping).
    Exact(Vec<u8>),
    /// The path is a directory.
    Directory,
    /// The path does not exist.
    Missing,
    /// The path goes through a regular file (`file.yaml/config.yaml`).
    NotADirectory,
    /// A symbolic link to nothing.
    DanglingLink,
    /// A file the (unprivileged) user may not read.
    Unreadable,
    /// A sparse file of `n` bytes (zeros).
    Sparse(u64),
    /// A device that never ends.
    DevZero,
}

struct Case {
    name: &'static str,
    input: Input,
    /// Each must appear in the message (`{path}` stands for the configuration's path).
    needles: Vec<&'static str>,
    /// The line the message must name (`line N`), where the parser reports one.
    line: Option<u32>,
}

fn yaml(name: &'static str, text: &str, needles: &[&'static str], line: Option<u32>) -> Case {
    Case {
        name,
        input: Input::Yaml(text.to_string()),
        needles: needles.to_vec(),
        line,
    }
}

fn other(name: &'static str, input: Input, needles: &[&'static str]) -> Case {
    Case {
        name,
        input,
        needles: needles.to_vec(),
        line: None,
    }
}

/// Keys every case gets unless it sets them itself: our backend in the namespace, a local source
/// (no network), and state and lock inside the temp dir so that "nothing written" is checkable.
fn with_base(text: &str, dir: &Path) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out + &base_keys(text, dir)
}

/// The base keys `text` does not set, as YAML lines.
fn base_keys(text: &str, dir: &Path) -> String {
    let has = |key: &str| {
        text.lines()
            .any(|l| l.trim_start_matches('\u{feff}').starts_with(key))
    };
    let base = [
        ("backend:", "backend: nftables".to_string()),
        (
            "sources:",
            "sources:\n  - cidrs: [\"198.51.100.0/24\"]".to_string(),
        ),
        (
            "state_dir:",
            format!("state_dir: {}", dir.join("state").display()),
        ),
        (
            "lock_file:",
            format!("lock_file: {}", dir.join("run/cf.lock").display()),
        ),
        ("fetch:", "fetch: { timeout: 1s, retries: 0 }".to_string()),
    ];
    base.into_iter()
        .filter(|(key, _)| !has(key))
        .map(|(_, line)| line + "\n")
        .collect()
}

/// The wrong-type, bad-value and unknown-key matrix, and files that are not configurations.
fn cases() -> Vec<Case> {
    let l = Some;
    let mut v = vec![
        // backend
        yaml("backend: list", "backend: [nftables]\n", &["backend"], l(1)),
        yaml("backend: map", "backend: {nft: 1}\n", &["backend"], l(1)),
        yaml("backend: number", "backend: 7\n", &["backend", "7"], l(1)),
        yaml("backend: unknown", "backend: pf\n", &["pf", "nftables"], l(1)),
        yaml("backend: empty", "backend: \"\"\n", &["backend"], l(1)),
        // sources
        yaml("sources: string", "sources: cloudflare\n", &["sources"], l(1)),
        yaml(
            "sources: map",
            "sources: {cloudflare: {}}\n",
            &["sources"],
            l(1),
        ),
        yaml("sources: empty", "sources: []\n", &["sources"], None),
        yaml("sources[]: number", "sources: [42]\n", &["sources"], l(1)),
        yaml(
            "sources[]: list",
            "sources: [[cloudflare]]\n",
            &["sources"],
            l(1),
        ),
        yaml(
            "sources[]: unknown kind",
            "sources: [cloudlfare]\n",
            &["cloudlfare"],
            l(1),
        ),
        yaml("sources[]: empty map", "sources: [{}]\n", &["source"], l(1)),
        yaml(
            "sources[]: unknown key",
            "sources:\n  - urls: https://x.example/l\n",
            &["urls"],
            l(2),
        ),
        yaml(
            "sources[]: two kinds",
            "sources:\n  - cidrs: [\"198.51.100.0/24\"]\n    file: /x\n",
            &["file", "separate"],
            l(2),
        ),
        yaml(
            "sources[]: twice",
            "sources: [cloudflare, cloudflare]\n",
            &["sources", "twice"],
            None,
        ),
        yaml(
            "sources.url: number",
            "sources:\n  - url: 5\n",
            &["sources.url", "5"],
            None,
        ),
        yaml(
            "sources.url: list",
            "sources:\n  - url: [\"https://x.example/l\"]\n",
            &["url"],
            l(2),
        ),
        yaml(
            "sources.url: plain http",
            "sources:\n  - url: \"http://lists.example/l\"\n",
            &["sources.url", "https"],
            None,
        ),
        yaml(
            "sources.file: map",
            "sources:\n  - file: {path: /x}\n",
            &["file"],
            l(2),
        ),
        yaml(
            "sources.file: relative",
            "sources:\n  - file: extra.txt\n",
            &["sources.file", "absolute"],
            None,
        ),
        yaml(
            "sources.cidrs: string",
            "sources:\n  - cidrs: \"198.51.100.0/24\"\n",
            &["cidrs"],
            l(2),
        ),
        yaml(
            "sources.cidrs: map",
            "sources:\n  - cidrs: {a: 1}\n",
            &["cidrs"],
            l(2),
        ),
        yaml(
            "sources.cidrs: empty",
            "sources:\n  - cidrs: []\n",
            &["sources.cidrs"],
            None,
        ),
        yaml(
            "sources.cidrs: octal trap",
            "sources:\n  - cidrs: [\"010.1.2.0/24\"]\n",
            &["sources.cidrs", "010.1.2.0/24"],
            None,
        ),
        yaml(
            "sources.cidrs: host bits",
            "sources:\n  - cidrs: [\"198.51.100.1/24\"]\n",
            &["sources.cidrs", "host bits"],
            None,
        ),
        yaml(
            "sources.cloudflare: string",
            "sources:\n  - cloudflare: mirror\n",
            &["cloudflare"],
            l(2),
        ),
        yaml(
            "sources.cloudflare: unknown key",
            "sources:\n  - cloudflare: {apiurl: \"https://x.example/\"}\n",
            &["apiurl", "api_url"],
            l(2),
        ),
        yaml(
            "sources.cloudflare.api_url: list",
            "sources:\n  - cloudflare: {api_url: [x]}\n",
            &["api_url"],
            l(2),
        ),
        yaml(
            "sources.cloudflare.api_url: plain http",
            "sources:\n  - cloudflare: {api_url: \"http://mirror.example/ips\"}\n",
            &["sources.cloudflare.api_url"],
            None,
        ),
        yaml(
            "sources.cloudflare.text_urls: string",
            "sources:\n  - cloudflare: {text_urls: \"https://x.example/v4\"}\n",
            &["text_urls"],
            l(2),
        ),
        yaml(
            "sources.cloudflare.text_urls: three",
            "sources:\n  - cloudflare: {text_urls: [\"https://a.example/1\", \"https://a.example/2\", \"https://a.example/3\"]}\n",
            &["sources.cloudflare.text_urls"],
            None,
        ),
        // families
        yaml("families: string", "families: ipv4\n", &["families"], l(1)),
        yaml(
            "families: map",
            "families: {ipv4: true}\n",
            &["families"],
            l(1),
        ),
        yaml("families: unknown", "families: [ipv5]\n", &["ipv5"], l(1)),
        yaml("families: number", "families: [4]\n", &["families"], l(1)),
        yaml("families: empty", "families: []\n", &["families"], None),
        // ports
        yaml("ports: string", "ports: \"80\"\n", &["ports"], l(1)),
        yaml("ports: map", "ports: {http: 80}\n", &["ports"], l(1)),
        yaml("ports: negative", "ports: [-1]\n", &["ports"], l(1)),
        yaml("ports: out of range", "ports: [65536]\n", &["ports"], l(1)),
        yaml("ports: zero", "ports: [0]\n", &["ports", "0"], None),
        yaml("ports: word", "ports: [\"eighty\"]\n", &["ports"], l(1)),
        yaml("ports: fraction", "ports: [80.5]\n", &["ports"], l(1)),
        yaml("ports: nested", "ports: [[80]]\n", &["ports"], l(1)),
        // protocol, restrict
        yaml("protocol: unknown", "protocol: icmp\n", &["icmp"], l(1)),
        yaml("protocol: list", "protocol: [tcp]\n", &["protocol"], l(1)),
        yaml("protocol: number", "protocol: 6\n", &["protocol"], l(1)),
        yaml("restrict: word", "restrict: maybe\n", &["restrict"], l(1)),
        yaml("restrict: list", "restrict: [true]\n", &["restrict"], l(1)),
        yaml("restrict: map", "restrict: {x: 1}\n", &["restrict"], l(1)),
        yaml(
            "restrict without ports",
            "restrict: true\nports: []\n",
            &["restrict"],
            None,
        ),
        // guards
        yaml("guards: number", "guards: 5\n", &["guards"], l(1)),
        yaml("guards: list", "guards: [max_removal]\n", &["guards"], l(1)),
        yaml("guards: string", "guards: strict\n", &["guards"], l(1)),
        yaml(
            "guards: unknown key",
            "guards:\n  max_removal: 0.5\n  min_entry: 3\n",
            &["min_entry"],
            l(3),
        ),
        yaml(
            "guards.min_entries: number",
            "guards:\n  min_entries: 3\n",
            &["min_entries"],
            l(2),
        ),
        yaml(
            "guards.min_entries: list",
            "guards:\n  min_entries: [3]\n",
            &["min_entries"],
            l(2),
        ),
        yaml(
            "guards.min_entries: unknown key",
            "guards:\n  min_entries:\n    ipv7: 1\n",
            &["ipv7"],
            l(3),
        ),
        yaml(
            "guards.min_entries.ipv4: negative",
            "guards:\n  min_entries:\n    ipv4: -1\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.min_entries.ipv6: word",
            "guards:\n  min_entries:\n    ipv6: three\n",
            &["ipv6"],
            l(3),
        ),
        yaml(
            "guards.min_entries.ipv4: fraction",
            "guards:\n  min_entries:\n    ipv4: 1.5\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.min_entries.ipv4: out of range",
            "guards:\n  min_entries:\n    ipv4: 99999999999999999999999\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.widest_prefix: number",
            "guards:\n  widest_prefix: 8\n",
            &["widest_prefix"],
            l(2),
        ),
        yaml(
            "guards.widest_prefix: unknown key",
            "guards:\n  widest_prefix:\n    ipv5: 8\n",
            &["ipv5"],
            l(3),
        ),
        yaml(
            "guards.widest_prefix.ipv4: below 8",
            "guards:\n  widest_prefix:\n    ipv4: 7\n",
            &["guards.widest_prefix"],
            None,
        ),
        yaml(
            "guards.widest_prefix.ipv4: above 32",
            "guards:\n  widest_prefix:\n    ipv4: 33\n",
            &["guards.widest_prefix"],
            None,
        ),
        yaml(
            "guards.widest_prefix.ipv6: below 16",
            "guards:\n  widest_prefix:\n    ipv6: 15\n",
            &["guards.widest_prefix"],
            None,
        ),
        yaml(
            "guards.widest_prefix.ipv6: above 128",
            "guards:\n  widest_prefix:\n    ipv6: 129\n",
            &["guards.widest_prefix"],
            None,
        ),
        yaml(
            "guards.widest_prefix.ipv4: beyond u8",
            "guards:\n  widest_prefix:\n    ipv4: 256\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.widest_prefix.ipv4: negative",
            "guards:\n  widest_prefix:\n    ipv4: -8\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.widest_prefix.ipv4: with slash",
            "guards:\n  widest_prefix:\n    ipv4: \"/8\"\n",
            &["ipv4"],
            l(3),
        ),
        yaml(
            "guards.max_removal: word",
            "guards:\n  max_removal: half\n",
            &["max_removal"],
            l(2),
        ),
        yaml(
            "guards.max_removal: negative",
            "guards:\n  max_removal: -0.1\n",
            &["guards.max_removal"],
            None,
        ),
        yaml(
            "guards.max_removal: above 1",
            "guards:\n  max_removal: 1.5\n",
            &["guards.max_removal"],
            None,
        ),
        yaml(
            "guards.max_removal: NaN",
            "guards:\n  max_removal: .nan\n",
            &["guards.max_removal"],
            None,
        ),
        yaml(
            "guards.max_removal: infinite",
            "guards:\n  max_removal: .inf\n",
            &["guards.max_removal"],
            None,
        ),
        yaml(
            "guards.max_removal: list",
            "guards:\n  max_removal: [0.5]\n",
            &["max_removal"],
            l(2),
        ),
        // fetch
        yaml("fetch: string", "fetch: 10s\n", &["fetch"], l(1)),
        yaml("fetch: list", "fetch: [10s]\n", &["fetch"], l(1)),
        yaml(
            "fetch: unknown key",
            "fetch:\n  timout: 1s\n",
            &["timout", "timeout"],
            l(2),
        ),
        yaml(
            "fetch.timeout: zero",
            "fetch:\n  timeout: 0s\n",
            &["fetch.timeout"],
            None,
        ),
        yaml(
            "fetch.timeout: negative number",
            "fetch:\n  timeout: -5\n",
            &["timeout", "negative"],
            l(2),
        ),
        yaml(
            "fetch.timeout: negative string",
            "fetch:\n  timeout: \"-5s\"\n",
            &["timeout", "-5s"],
            l(2),
        ),
        yaml(
            "fetch.timeout: unknown unit",
            "fetch:\n  timeout: 10 parsecs\n",
            &["timeout", "parsecs"],
            l(2),
        ),
        yaml(
            "fetch.timeout: list",
            "fetch:\n  timeout: [1]\n",
            &["timeout"],
            l(2),
        ),
        yaml(
            "fetch.timeout: map",
            "fetch:\n  timeout: {s: 10}\n",
            &["timeout"],
            l(2),
        ),
        yaml(
            "fetch.timeout: overflow",
            "fetch:\n  timeout: 99999999999999999h\n",
            &["timeout", "too long"],
            l(2),
        ),
        yaml(
            "fetch.retries: negative",
            "fetch:\n  retries: -1\n",
            &["retries"],
            l(2),
        ),
        yaml(
            "fetch.retries: above 10",
            "fetch:\n  retries: 11\n",
            &["fetch.retries"],
            None,
        ),
        yaml(
            "fetch.retries: word",
            "fetch:\n  retries: three\n",
            &["retries"],
            l(2),
        ),
        yaml(
            "fetch.retries: beyond u32",
            "fetch:\n  retries: 4294967296\n",
            &["retries"],
            l(2),
        ),
        yaml(
            "fetch.max_bytes: below 1KiB",
            "fetch:\n  max_bytes: 512\n",
            &["fetch.max_bytes"],
            None,
        ),
        yaml(
            "fetch.max_bytes: negative",
            "fetch:\n  max_bytes: -1\n",
            &["max_bytes", "negative"],
            l(2),
        ),
        yaml(
            "fetch.max_bytes: unknown unit",
            "fetch:\n  max_bytes: 1TB\n",
            &["max_bytes", "TB"],
            l(2),
        ),
        yaml(
            "fetch.max_bytes: list",
            "fetch:\n  max_bytes: [1]\n",
            &["max_bytes"],
            l(2),
        ),
        yaml(
            "fetch.ca_file: relative",
            "fetch:\n  ca_file: ca.pem\n",
            &["fetch.ca_file", "absolute"],
            None,
        ),
        yaml(
            "fetch.ca_file: list",
            "fetch:\n  ca_file: [/a.pem]\n",
            &["ca_file"],
            l(2),
        ),
        // paths and the lock
        yaml(
            "state_dir: relative",
            "state_dir: state\n",
            &["state_dir", "absolute"],
            None,
        ),
        yaml(
            "state_dir: empty",
            "state_dir: \"\"\n",
            &["state_dir", "absolute"],
            None,
        ),
        yaml("state_dir: list", "state_dir: [/a]\n", &["state_dir"], l(1)),
        yaml(
            "state_dir: map",
            "state_dir: {a: /b}\n",
            &["state_dir"],
            l(1),
        ),
        yaml(
            "lock_file: relative",
            "lock_file: run/cf.lock\n",
            &["lock_file", "absolute"],
            None,
        ),
        yaml("lock_file: list", "lock_file: [/a]\n", &["lock_file"], l(1)),
        yaml(
            "lock_timeout: negative",
            "lock_timeout: -1\n",
            &["lock_timeout", "negative"],
            l(1),
        ),
        yaml(
            "lock_timeout: word",
            "lock_timeout: soon\n",
            &["lock_timeout", "soon"],
            l(1),
        ),
        yaml(
            "lock_timeout: unknown unit",
            "lock_timeout: 1 fortnight\n",
            &["lock_timeout", "fortnight"],
            l(1),
        ),
        yaml(
            "lock_timeout: list",
            "lock_timeout: [1]\n",
            &["lock_timeout"],
            l(1),
        ),
        // nftables
        yaml(
            "nftables: string",
            "nftables: cf_allowlist\n",
            &["nftables"],
            l(1),
        ),
        yaml("nftables: list", "nftables: [x]\n", &["nftables"], l(1)),
        yaml(
            "nftables: unknown key",
            "nftables:\n  tabel: x\n",
            &["tabel", "table"],
            l(2),
        ),
        yaml(
            "nftables.table: space",
            "nftables:\n  table: \"a b\"\n",
            &["nftables.table"],
            None,
        ),
        yaml(
            "nftables.table: empty",
            "nftables:\n  table: \"\"\n",
            &["nftables.table"],
            None,
        ),
        yaml(
            "nftables.table: too long",
            "nftables:\n  table: abcdefghijklmnopqrstuvwxyz123\n",
            &["nftables.table"],
            None,
        ),
        yaml(
            "nftables.table: list",
            "nftables:\n  table: [x]\n",
            &["table"],
            l(2),
        ),
        yaml(
            "nftables.chain: list",
            "nftables:\n  chain: [input]\n",
            &["chain"],
            l(2),
        ),
        yaml(
            "nftables.family: map",
            "nftables:\n  family: {a: 1}\n",
            &["family"],
            l(2),
        ),
        // iptables
        yaml("iptables: string", "iptables: CF\n", &["iptables"], l(1)),
        yaml(
            "iptables: unknown key",
            "iptables:\n  chan: X\n",
            &["chan", "chain"],
            l(2),
        ),
        yaml(
            "iptables.chain: space",
            "iptables:\n  chain: \"a b\"\n",
            &["iptables.chain"],
            None,
        ),
        yaml(
            "iptables.chain: empty",
            "iptables:\n  chain: \"\"\n",
            &["iptables.chain"],
            None,
        ),
        yaml(
            "iptables.ipset: unknown",
            "iptables:\n  ipset: sometimes\n",
            &["sometimes"],
            l(2),
        ),
        yaml(
            "iptables.ipset: list",
            "iptables:\n  ipset: [auto]\n",
            &["ipset"],
            l(2),
        ),
        yaml(
            "ufw.driver: unknown",
            "ufw:\n  driver: python\n",
            &["python"],
            l(2),
        ),
        yaml(
            "iptables.variant: unknown",
            "iptables:\n  variant: xtables\n",
            &["xtables"],
            l(2),
        ),
        // ufw
        yaml("ufw: string", "ufw: enabled\n", &["ufw"], l(1)),
        yaml(
            "ufw: unknown key",
            "ufw:\n  commment: x\n",
            &["commment", "comment"],
            l(2),
        ),
        yaml(
            "ufw.comment: empty",
            "ufw:\n  comment: \"\"\n",
            &["ufw.comment"],
            None,
        ),
        yaml(
            "ufw.comment: quote",
            "ufw:\n  comment: \"it's\"\n",
            &["ufw.comment"],
            None,
        ),
        yaml(
            "ufw.comment: list",
            "ufw:\n  comment: [a]\n",
            &["comment"],
            l(2),
        ),
        yaml(
            "ufw.dir: relative",
            "ufw:\n  dir: etc/ufw\n",
            &["ufw.dir", "absolute"],
            None,
        ),
        // csf
        yaml("csf: list", "csf: [x]\n", &["csf"], l(1)),
        yaml(
            "csf: unknown key",
            "csf:\n  relaod: [csf]\n",
            &["relaod", "reload"],
            l(2),
        ),
        yaml(
            "csf.dir: relative",
            "csf:\n  dir: etc/csf\n",
            &["csf.dir", "absolute"],
            None,
        ),
        yaml(
            "csf.ignore: word",
            "csf:\n  ignore: maybe\n",
            &["ignore"],
            l(2),
        ),
        yaml(
            "csf.reload: string",
            "csf:\n  reload: \"csf -ra\"\n",
            &["reload"],
            l(2),
        ),
        yaml(
            "csf.reload: empty",
            "csf:\n  reload: []\n",
            &["csf.reload"],
            None,
        ),
        yaml(
            "csf.reload: blank command",
            "csf:\n  reload: [\"\"]\n",
            &["csf.reload"],
            None,
        ),
        yaml(
            "csf.reload: map",
            "csf:\n  reload: {a: b}\n",
            &["reload"],
            l(2),
        ),
        yaml(
            "csf.recover: string",
            "csf:\n  recover: \"csf -r\"\n",
            &["recover"],
            l(2),
        ),
        yaml(
            "csf.recover: empty",
            "csf:\n  recover: []\n",
            &["csf.recover"],
            None,
        ),
        yaml("csf.dir: map", "csf:\n  dir: {a: /b}\n", &["dir"], l(2)),
        yaml("csf.ignore: list", "csf:\n  ignore: [true]\n", &["ignore"], l(2)),
        yaml("ufw.dir: list", "ufw:\n  dir: [/etc/ufw]\n", &["dir"], l(2)),
        yaml(
            "iptables.variant: list",
            "iptables:\n  variant: [nft]\n",
            &["variant"],
            l(2),
        ),
        yaml(
            "fetch.ca_file: map",
            "fetch:\n  ca_file: {path: /a.pem}\n",
            &["ca_file"],
            l(2),
        ),
        yaml(
            "sources.cloudflare.text_urls: map",
            "sources:\n  - cloudflare: {text_urls: {v4: \"https://x.example/v4\"}}\n",
            &["text_urls"],
            l(2),
        ),
        yaml("lock_file: map", "lock_file: {a: /b}\n", &["lock_file"], l(1)),
        // unknown top-level keys, anywhere in the file
        yaml("top: unknown key", "port: [80]\n", &["port"], l(1)),
        yaml(
            "top: wrong case",
            "Backend: nftables\n",
            &["Backend"],
            l(1),
        ),
        yaml(
            "top: unknown key on line 3",
            "backend: nftables\nports: [80]\nrestict: true\n",
            &["restict"],
            l(3),
        ),
        // the shape of the file
        yaml(
            "duplicate key",
            "ports: [80]\nports: [443]\n",
            &["ports", "duplicate"],
            l(2),
        ),
        other("top: a list", Input::Exact(b"[1, 2]\n".to_vec()), &["{path}", "line 1"]),
        other(
            "top: a string",
            Input::Exact(b"\"just a string\"\n".to_vec()),
            &["{path}", "line 1"],
        ),
        yaml(
            "two documents",
            "---\nports: [443]\n---\nports: [80]\n",
            &["document"],
            None,
        ),
        yaml(
            "tab indentation",
            "guards:\n\tmax_removal: 0.5\n",
            &["tab"],
            l(2),
        ),
        yaml(
            "tab indentation, nested",
            "fetch:\n  timeout: 5s\n\t retries: 1\n",
            &["tab"],
            l(2),
        ),
        yaml(
            "unterminated flow list",
            "ports: [80, 443\nrestrict: false\n",
            &["{path}"],
            None,
        ),
        yaml(
            "unterminated quote",
            "ufw:\n  comment: \"cf-allowlist\n",
            &["{path}"],
            None,
        ),
        yaml(
            "bad indentation",
            "guards:\n  max_removal: 0.5\n   min_entries: {}\n",
            &["max_removal"],
            l(2),
        ),
        yaml(
            "BOM, then an unknown key",
            "\u{feff}prots: [80]\n",
            &["prots"],
            l(1),
        ),
        other(
            "invalid UTF-8",
            Input::Raw(b"ports: [443]\n\xff\xfe\n".to_vec()),
            &["{path}", "UTF-8"],
        ),
        other(
            "invalid UTF-8 in a value",
            Input::Raw(b"ufw:\n  comment: \"caf\xe9\"\n".to_vec()),
            &["{path}", "UTF-8"],
        ),
        // files that are not configurations
        other("a directory", Input::Directory, &["{path}"]),
        other("a missing explicit file", Input::Missing, &["{path}"]),
        other(
            "a path through a file",
            Input::NotADirectory,
            &["{path}", "Not a directory"],
        ),
        other("a dangling symlink", Input::DanglingLink, &["{path}"]),
        other(
            "an unreadable file",
            Input::Unreadable,
            &["{path}", "Permission denied"],
        ),
        // hostile YAML
        other(
            "alias bomb (billion laughs), top level",
            Input::Raw(billion_laughs("").into_bytes()),
            &["{path}"],
        ),
        other(
            "alias bomb inside ports",
            Input::Raw(billion_laughs("ports").into_bytes()),
            &["{path}"],
        ),
        other(
            "alias bomb inside sources.cidrs",
            Input::Raw(billion_laughs("cidrs").into_bytes()),
            &["{path}"],
        ),
        other(
            "alias flood (200k aliases)",
            Input::Raw(
                format!("ports: [&p 80{}]\n", ", *p".repeat(200_000)).into_bytes(),
            ),
            &["{path}"],
        ),
        other(
            "a huge file (60 MiB of comments, then a bad key)",
            Input::Raw({
                let mut s = "# padding padding padding padding padding\n".repeat(1_500_000);
                s.push_str("prots: [80]\n");
                s.into_bytes()
            }),
            &["{path}"],
        ),
        other(
            "a huge scalar (64 MiB)",
            Input::Raw(format!("ufw:\n  comment: {}\n", "x".repeat(64 << 20)).into_bytes()),
            &["{path}"],
        ),
        other(
            "a sparse 2 GiB file",
            Input::Sparse(2 << 30),
            &["{path}"],
        ),
    ];
    // Every key named in the brief's "must be refused at check-config" list is above; make sure.
    for must in [
        "state_dir: relative",
        "lock_file: relative",
        "csf.dir: relative",
        "ufw.dir: relative",
        "fetch.ca_file: relative",
        "guards.widest_prefix.ipv4: below 8",
    ] {
        assert!(v.iter().any(|c| c.name == must), "{must}");
    }
    v.sort_by_key(|c| c.name);
    v
}

/// Nested anchors, each list naming the one before nine times: 9^9 leaves if expanded. `inside`:
/// empty (top-level keys), `ports` or `cidrs` (in a key the parser must read).
fn billion_laughs(inside: &str) -> String {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let leaf = if inside == "ports" {
        "80"
    } else {
        "\"198.51.100.0/24\""
    };
    let mut levels = vec![format!("&a [{}]", [leaf; 9].join(","))];
    for w in names.windows(2) {
        levels.push(format!(
            "&{} [{}]",
            w[1],
            vec![format!("*{}", w[0]); 9].join(",")
        ));
    }
    match inside {
        "" => names
            .iter()
            .zip(&levels)
            .map(|(n, l)| format!("{n}: {l}\n"))
            .collect(),
        "ports" => format!("ports: [{}]\n", levels.join(", ")),
        _ => format!("sources:\n  - cidrs: [{}]\n", levels.join(", ")),
    }
}

/// Puts the case's input in place; returns the `-c` path.
fn prepare(input: &Input, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("config.yaml");
    match input {
        Input::Yaml(text) => std::fs::write(&path, with_base(text, dir)).unwrap(),
        Input::Raw(bytes) => {
            let mut bytes = bytes.clone();
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            let suffix = base_keys(&String::from_utf8_lossy(&bytes), dir);
            bytes.extend(suffix.into_bytes());
            std::fs::write(&path, bytes).unwrap()
        }
        Input::Exact(bytes) => std::fs::write(&path, bytes).unwrap(),
        Input::Directory => std::fs::create_dir(&path).unwrap(),
        Input::Missing => {}
        Input::NotADirectory => {
            std::fs::write(dir.join("file.yaml"), "ports: [80]\n").unwrap();
            return dir.join("file.yaml").join("config.yaml");
        }
        Input::DanglingLink => std::os::unix::fs::symlink(dir.join("nowhere.yaml"), &path).unwrap(),
        Input::Unreadable => {
            std::fs::write(&path, "ports: [80]\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
            // The unprivileged user may walk to the file, not read it.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        Input::Sparse(n) => std::fs::File::create(&path).unwrap().set_len(*n).unwrap(),
        Input::DevZero => return PathBuf::from("/dev/zero"),
    }
    path
}

/// One bounded run of the binary in the namespace, from `dir`, under the memory limit; as
/// `nobody` for [`Input::Unreadable`] (root reads any file).
fn run_case(ns: &NetNs, dir: &Path, config: &Path, args: &[&str], as_nobody: bool) -> Out {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg("prlimit")
        .arg(format!("--as={MEMORY_LIMIT}"))
        .arg("--");
    if as_nobody {
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]);
    }
    cmd.arg(bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .current_dir(dir);
    let (out, took) = run_bounded(cmd, RUN_LIMIT);
    out.unwrap_or_else(|| panic!("{args:?} did not finish within {RUN_LIMIT:?} ({took:?})"))
}

/// Runs one case through the three commands; returns what was wrong with it (empty: passed).
fn check(case: &Case, ns: &NetNs) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = prepare(&case.input, dir.path());
    let before = tree(dir.path());
    let ruleset = ns.exec_ok("nft", &["list", "ruleset"]);
    let as_nobody = matches!(case.input, Input::Unreadable);
    let path = config.display().to_string();
    let mut needles: Vec<String> = case
        .needles
        .iter()
        .map(|n| n.replace("{path}", &path))
        .collect();
    if let Some(line) = case.line {
        needles.push(format!("line {line}"));
    }
    let mut problems = Vec::new();
    for args in [
        &["check-config"][..],
        &["sync", "--dry-run"][..],
        &["sync", "--output", "json"][..],
    ] {
        let out = run_case(ns, dir.path(), &config, args, as_nobody);
        let what = format!("{args:?}");
        if out.code != 78 {
            problems.push(format!(
                "{what}: exit {} (want 78); stdout: {}; stderr: {}",
                out.code,
                out.stdout.chars().take(300).collect::<String>(),
                out.stderr.chars().take(300).collect::<String>()
            ));
            continue;
        }
        let message = if args.contains(&"json") {
            match serde_json::from_str::<serde_json::Value>(out.stdout.trim()) {
                Ok(j) if j["schema"] == 1 && j["error"]["kind"] == "config" => j["error"]
                    ["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                _ => {
                    problems.push(format!(
                        "{what}: stdout is not one {{\"schema\":1,\"error\":{{\"kind\":\"config\"}}}} object: {}",
                        out.stdout
                    ));
                    continue;
                }
            }
        } else {
            if !out.stdout.is_empty() {
                problems.push(format!(
                    "{what}: text mode printed on stdout: {}",
                    out.stdout
                ));
            }
            out.stderr.clone()
        };
        for needle in &needles {
            if !message.contains(needle.as_str()) {
                problems.push(format!("{what}: message lacks {needle:?}: {message}"));
            }
        }
    }
    let after = tree(dir.path());
    if after != before {
        problems.push(format!("files written: before {before:?}, after {after:?}"));
    }
    if ns.exec_ok("nft", &["list", "ruleset"]) != ruleset {
        problems.push("the firewall changed".into());
    }
    problems
}

fn run_table(cases: &[Case], ns: &NetNs) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        for problem in check(case, ns) {
            failures.push(format!("[{}] {problem}", case.name));
        }
    }
    failures
}

#[test]
fn every_config_fault_exits_78_names_the_key_and_writes_nothing() {
    let ns = NetNs::new("cfgfault");
    let cases = cases();
    let failures = run_table(&cases, &ns);
    eprintln!(
        "config fault matrix: {} cases x 3 commands, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An empty file (or one with only comments, or an empty document) is the built-in defaults.
#[test]
fn an_empty_configuration_is_the_defaults() {
    let ns = NetNs::new("cfgempty");
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let cases: &[&[u8]] = &[
        b"",
        b"\n\n",
        b"   \n\t\n",
        b"# only a comment\n",
        b"---\n",
        b"null\n",
        b"~\n",
        b"\xef\xbb\xbf",
        b"\xef\xbb\xbf# a BOM and a comment\n",
    ];
    for bytes in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, bytes).unwrap();
        let out = run_case(
            &ns,
            dir.path(),
            &path,
            &["check-config", "--output", "json"],
            false,
        );
        let what = String::from_utf8_lossy(bytes);
        out.expect(0);
        assert_eq!(out.json()["config"], defaults, "{what:?}");
        assert_eq!(
            tree(dir.path()),
            vec!["config.yaml".to_string()],
            "{what:?}"
        );
    }
    eprintln!("empty configurations: {} cases", cases.len());
}

/// A byte-order mark (Windows editors write one) and tabs where YAML allows them change nothing.
#[test]
fn a_bom_and_tabs_between_tokens_are_accepted() {
    let ns = NetNs::new("cfgbom");
    let plain = "ports: [443]\nguards:\n  max_removal: 0.25\n";
    let variants = [
        format!("\u{feff}{plain}"),
        "ports:\t[443]\nguards:\n  max_removal: 0.25\n".to_string(),
        "ports: [443]\t# tab before a comment\nguards: {max_removal: 0.25}\n".to_string(),
        plain.replace('\n', "\r\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, plain).unwrap();
    let want = run_case(
        &ns,
        dir.path(),
        &path,
        &["check-config", "--output", "json"],
        false,
    )
    .expect(0)
    .json()["config"]
        .clone();
    assert_eq!(want["ports"], serde_json::json!([443]));
    for text in &variants {
        std::fs::write(&path, text).unwrap();
        let out = run_case(
            &ns,
            dir.path(),
            &path,
            &["check-config", "--output", "json"],
            false,
        );
        out.expect(0);
        assert_eq!(out.json()["config"], want, "{text:?}");
    }
}

/// Backend object names that reach `nft -f` or `iptables-restore` scripts must be plain names:
/// anything else is an injection into the ruleset. Also our own table's name and family are fixed,
/// an operator's table needs its chain, and iptables' built-in chains are not ours to own.
fn backend_name_cases() -> Vec<Case> {
    let l = |_: u32| None::<u32>;
    vec![
        yaml(
            "nftables.chain: a rule injected",
            "nftables: { table: filter, chain: \"input meta mark 7 drop; delete table inet victim\" }\n",
            &["nftables.chain"],
            l(1),
        ),
        yaml(
            "nftables.chain: injected, our table",
            "nftables: { chain: \"input meta mark 7 drop; delete table inet victim\" }\n",
            &["nftables.chain"],
            l(1),
        ),
        yaml(
            "nftables.family: injected",
            "nftables: { family: \"inet; flush ruleset\" }\n",
            &["nftables.family"],
            l(1),
        ),
        yaml(
            "nftables.family: unknown",
            "nftables: { table: filter, family: arp, chain: input }\n",
            &["nftables.family"],
            l(1),
        ),
        yaml(
            "nftables.family: our table is inet",
            "nftables: { family: ip }\n",
            &["nftables.family"],
            l(1),
        ),
        yaml(
            "nftables.table: an operator's table without chain",
            "nftables: { table: filter }\n",
            &["nftables.chain"],
            l(1),
        ),
        yaml(
            "nftables.chain: space",
            "nftables: { table: filter, chain: \"in put\" }\n",
            &["nftables.chain"],
            l(1),
        ),
        yaml(
            "nftables.chain: empty",
            "nftables: { table: filter, chain: \"\" }\n",
            &["nftables.chain"],
            l(1),
        ),
        yaml(
            "iptables.chain: INPUT",
            "iptables: { chain: INPUT }\n",
            &["iptables.chain"],
            l(1),
        ),
        yaml(
            "iptables.chain: FORWARD",
            "iptables: { chain: FORWARD }\n",
            &["iptables.chain"],
            l(1),
        ),
        yaml(
            "iptables.chain: an option",
            "iptables: { chain: \"-F\" }\n",
            &["iptables.chain"],
            l(1),
        ),
    ]
}

#[test]
fn backend_object_names_are_validated_at_check_config() {
    let ns = NetNs::new("cfgnames");
    let cases = backend_name_cases();
    let failures = run_table(&cases, &ns);
    eprintln!(
        "backend name cases: {} cases x 3 commands, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A NUL byte is not YAML (not even printable): it must be refused naming its line, not read as
/// the end of the file. Today everything after it is silently dropped, misspelt keys and bad
/// values included, and the defaults apply: a file with a run of NULs (a torn write after a
/// crash) turns `restrict`, `ports` or `state_dir` back to their defaults without a word.
#[test]
fn a_nul_byte_is_refused_not_read_as_the_end_of_the_file() {
    let ns = NetNs::new("cfgnul");
    let dir = tempfile::tempdir().unwrap();
    // The base keys first, so that even a wrong acceptance keeps state and lock in the temp dir.
    let mut bytes = base_keys("", dir.path()).into_bytes();
    bytes.extend(b"ports: [443]\n\0\nprots: [80]\nstate_dir: relative\n");
    let case = Case {
        name: "a NUL byte",
        input: Input::Exact(bytes),
        needles: vec!["{path}"],
        line: None,
    };
    let failures = run_table(&[case], &ns);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A configuration is a few hundred bytes: a file that keeps going (`-c /dev/zero`, a log file
/// named by mistake) must be refused once it is clearly too large, not read until memory runs
/// out. Today `Config::load` reads the whole file (`read_to_string`, no cap): under the 1 GiB
/// limit of this test it fails with "out of memory"; without one it takes the host's memory.
#[test]
fn an_endless_configuration_is_refused_by_a_size_cap() {
    let ns = NetNs::new("cfgzero");
    let dir = tempfile::tempdir().unwrap();
    let config = prepare(&Input::DevZero, dir.path());
    let out = run_case(&ns, dir.path(), &config, &["check-config"], false);
    out.expect(78);
    assert!(out.stderr.contains("/dev/zero"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("out of memory"),
        "refused by running out of memory, not by a size cap: {}",
        out.stderr
    );
}

/// `check-config` refuses a `fetch.ca_file` that cannot be read or holds no certificate; `sync`
/// must refuse it the same way before it writes anything. Today `sync` takes the run lock first
/// (creating `lock_file` and its directory) and only then builds the HTTP client.
#[test]
fn an_unusable_ca_file_is_refused_before_anything_is_written() {
    let ns = NetNs::new("cfgca");
    let cases = [
        yaml(
            "fetch.ca_file: missing",
            "fetch:\n  ca_file: /nonexistent/ca.pem\n",
            &["fetch.ca_file", "/nonexistent/ca.pem"],
            None,
        ),
        yaml(
            "fetch.ca_file: not PEM",
            "fetch:\n  ca_file: /proc/self/cmdline\n",
            &["fetch.ca_file", "/proc/self/cmdline"],
            None,
        ),
    ];
    let failures = run_table(&cases, &ns);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
