//! Outputs beyond the firewall, end to end with the real servers: nginx, Apache and Fail2Ban
//! each run inside the test's network namespace with a private configuration directory, pid
//! file, logs and socket (never the host's `/etc`, never `apachectl start`), and real HTTP
//! requests from a veth peer decide what the web server believes the client's address is.
//! Reloads return before they apply, so every check after one waits for the new behaviour.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::tcp::Lab;
use testkit::NetNs;

use crate::util::*;

/// The header a visitor's address arrives in from Cloudflare.
const VISITOR: &str = "203.0.113.9";
/// The veth peer's address inside the allowlist (`cidrs:` below) and the server's on that link.
const ALLOWED: (&str, &str) = Lab::ALLOWED[0];
/// The peer's address outside every range, and the server's.
const STRANGER: (&str, &str) = Lab::STRANGERS[0];

/// A server started in a namespace, in a process group of its own: stopped (the whole group,
/// workers included) before the namespace goes.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn start(ns: &NetNs, name: &'static str, program: &str, args: &[&str]) -> Daemon {
        let mut cmd = ns.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Daemon { child, name }
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Panics if the server has exited (it must survive a refused reload).
    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{} exited",
            self.name
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Workers may outlive the master by a moment.
                std::thread::sleep(Duration::from_millis(100));
                self.signal_group("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

static REQUEST: AtomicU32 = AtomicU32::new(0);

/// A web server's lab: the Cloudflare stand-in's namespace (where the binary and the server
/// run) linked to a client namespace, and the server's access log.
struct Web {
    server: Option<Daemon>,
    client: NetNs,
    env: Env,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Web {
    fn drop(&mut self) {
        // The server first, while its namespace still exists.
        drop(self.server.take());
    }
}

impl Web {
    fn new(tag: &str) -> Web {
        let env = Env::new(tag);
        let client = NetNs::new(&format!("{tag}c"));
        let (a, b) = (ALLOWED, STRANGER);
        env.ns.link(
            &client,
            &[&format!("{}/24", a.1), &format!("{}/24", b.1)],
            &[&format!("{}/24", a.0), &format!("{}/24", b.0)],
        );
        let dir = env.path("web");
        fs::create_dir(&dir).unwrap();
        let log = dir.join("access.log");
        Web {
            server: None,
            client,
            env,
            dir,
            log,
        }
    }

    fn d(&self) -> String {
        self.dir.display().to_string()
    }

    /// The config: nftables, the Cloudflare stand-in plus the client's allowed network, and
    /// `outputs` (YAML lines, indented by two spaces).
    fn config(&self, outputs: &str) {
        let base = self.env.server().url("");
        self.env.config(&format!(
            "sources:\n  - cloudflare: {{ api_url: \"{base}{API_PATH}\", text_urls: [\"{base}/ips-v4\", \"{base}/ips-v6\"] }}\n  \
             - cidrs: [\"{}\"]\noutputs:\n{outputs}",
            Lab::ALLOWED_NETS[0]
        ));
    }

    /// A real request from the peer's address `src` to `dst` with `CF-Connecting-IP: VISITOR`;
    /// returns the client address the server logged for it.
    fn logged_as(&self, (src, dst): (&str, &str)) -> String {
        let id = format!(
            "/req-{}-{}",
            std::process::id(),
            REQUEST.fetch_add(1, Ordering::SeqCst)
        );
        let code = "import socket, sys\n\
            src, dst, path, visitor = sys.argv[1:5]\n\
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
            s.settimeout(3.0)\n\
            s.bind((src, 0))\n\
            s.connect((dst, 80))\n\
            s.sendall(('GET %s HTTP/1.0\\r\\nHost: origin.example\\r\\nCF-Connecting-IP: %s\\r\\n\\r\\n' % (path, visitor)).encode())\n\
            data = b''\n\
            while True:\n    chunk = s.recv(4096)\n    if not chunk: break\n    data += chunk\n\
            print(data.split(b'\\r\\n')[0].decode())\n";
        let (ok, out, err) = self
            .client
            .exec("python3", &["-c", code, src, dst, &id, VISITOR]);
        assert!(
            ok && out.starts_with("HTTP/"),
            "request {id} from {src}: {out}{err}"
        );
        wait_for(
            &format!("{id} in {}", self.log.display()),
            Duration::from_secs(5),
            || {
                fs::read_to_string(&self.log).ok()?.lines().find_map(|l| {
                    let mut parts = l.split('|');
                    let addr = parts.next()?;
                    (parts.nth(1)? == id).then(|| addr.to_string())
                })
            },
        )
    }

    /// Waits until a request from inside the allowlist is logged as `want`.
    fn wait_allowed_logged_as(&self, want: &str) {
        wait_for(
            &format!("a request from {} logged as {want}", ALLOWED.0),
            Duration::from_secs(10),
            || (self.logged_as(ALLOWED) == want).then_some(()),
        );
    }

    fn count(&self, file: &str, needle: &str) -> usize {
        fs::read_to_string(self.dir.join(file))
            .map(|t| t.matches(needle).count())
            .unwrap_or(0)
    }

    fn sync(&self) -> Value {
        self.env.run(&["sync", "--output", "json"]).expect(0).json()
    }
}

/// The same story for both web servers: a dry run writes nothing; a sync makes the server
/// trust the header from the allowlist only; a no-op reloads nothing; a list change reloads
/// once; a broken main configuration fails the run, restores the old file and leaves the
/// server up; purge removes the file.
fn web_server_story(
    web: &mut Web,
    name: &str,
    ours: &Path,
    reloads: &dyn Fn(&Web) -> usize,
    break_config: &dyn Fn(&Web, bool),
) {
    let peer = ALLOWED.0;
    assert_eq!(
        web.logged_as(ALLOWED),
        peer,
        "before any sync: the peer itself"
    );

    let j = web
        .env
        .run(&["sync", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["outputs"][0]["name"], name);
    assert_eq!(j["outputs"][0]["changed"], true);
    assert_eq!(j["outputs"][0]["reloaded"], false);
    assert!(!ours.exists(), "a dry run writes no file");

    let j = web.sync();
    let out = &j["outputs"][0];
    assert_eq!(
        (out["changed"].clone(), out["reloaded"].clone()),
        (true.into(), true.into()),
        "{j}"
    );
    assert_eq!(out["added"]["ipv4"].as_array().unwrap().len(), 16, "{out}");
    let text = fs::read_to_string(ours).unwrap();
    assert!(text.starts_with("# Generated by cf-allowlist"), "{text}");
    web.wait_allowed_logged_as(VISITOR);
    assert_eq!(
        web.logged_as(STRANGER),
        STRANGER.0,
        "the same header from outside the list is not trusted"
    );
    assert_eq!(reloads(web), 1);

    // No change: nothing written, no reload.
    let bytes = fs::read(ours).unwrap();
    let j = web
        .env
        .run(&["sync", "--output", "json", "--detailed-exitcode"])
        .expect(0)
        .json();
    assert_eq!(j["outputs"][0]["changed"], false);
    assert_eq!(fs::read(ours).unwrap(), bytes);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reloads(web), 1, "a no-op does not reload");

    // Cloudflare's 2020 list: one reload.
    web.env.serve_api(testkit::http::Reply::ok(api_2020()));
    let j = web.sync();
    assert_eq!(
        j["outputs"][0]["added"]["ipv4"],
        serde_json::json!(["104.16.0.0/12"])
    );
    wait_for("the reload", Duration::from_secs(10), || {
        (reloads(web) == 2).then_some(())
    });
    web.wait_allowed_logged_as(VISITOR);
    let good = fs::read(ours).unwrap();

    // A broken main configuration: the test fails, the old file is back, the server is up.
    break_config(web, true);
    web.env.serve_api(testkit::http::Reply::ok(API));
    let e = web.env.run(&["sync", "--output", "json"]).expect(1).json();
    assert_eq!(e["error"]["kind"], "output", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("output {name}")) && msg.contains("previous file was restored"),
        "{msg}"
    );
    assert!(
        msg.contains("the firewall was changed and verified"),
        "{msg}"
    );
    assert_eq!(fs::read(ours).unwrap(), good, "the old file is restored");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reloads(web), 2, "nothing reloaded");
    web.server.as_mut().unwrap().assert_running();
    assert_eq!(web.logged_as(ALLOWED), VISITOR, "the server still serves");

    // Fixed: the next run applies what the last one could not.
    break_config(web, false);
    let j = web.sync();
    assert_eq!(j["outputs"][0]["changed"], true, "{j}");
    assert_eq!(j["changed"], true);
    wait_for("the reload", Duration::from_secs(10), || {
        (reloads(web) == 3).then_some(())
    });

    let j = web.env.run(&["purge", "--output", "json"]).expect(0).json();
    assert_eq!(j["outputs"][0]["changed"], true, "{j}");
    assert!(!ours.exists());
    web.wait_allowed_logged_as(peer);
}

fn nginx_conf(web: &Web, broken: bool) {
    let d = web.d();
    let bogus = if broken {
        "  bogus_directive on;\n"
    } else {
        ""
    };
    fs::write(
        web.dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
             events {{ worker_connections 64; }}\nhttp {{\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  log_format cfa '$remote_addr|$http_cf_connecting_ip|$request_uri';\n  \
             access_log {d}/access.log cfa;\n{bogus}  include {d}/conf.d/*.conf;\n  \
             server {{ listen 80; return 200 \"ok\\n\"; }}\n}}\n"
        ),
    )
    .unwrap();
}

#[test]
fn nginx_trusts_cf_connecting_ip_from_the_allowlist_only() {
    let mut web = Web::new("nginx");
    let d = web.d();
    fs::create_dir(web.dir.join("conf.d")).unwrap();
    nginx_conf(&web, false);
    let base = format!("nginx, -p, {d}, -e, {d}/error.log, -c, {d}/nginx.conf");
    web.config(&format!(
        "  nginx: {{ path: {d}/conf.d/cf-allowlist-realip.conf, test: [{base}, -t], reload: [{base}, -s, reload] }}\n"
    ));
    web.server = Some(Daemon::start(
        &web.env.ns,
        "nginx",
        "nginx",
        &[
            "-p",
            &d,
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
            "-g",
            "daemon off;",
        ],
    ));
    wait_for("nginx to answer", Duration::from_secs(10), || {
        testkit::tcp::connect(&web.client, ALLOWED.0, ALLOWED.1, 80)
            .eq("ok")
            .then_some(())
    });
    let ours = web.dir.join("conf.d/cf-allowlist-realip.conf");
    web_server_story(
        &mut web,
        "nginx",
        &ours,
        &|w| w.count("error.log", "(SIGHUP) received"),
        &nginx_conf,
    );
}

fn apache_conf(web: &Web, broken: bool) {
    let d = web.d();
    let bogus = if broken { "BogusDirective on\n" } else { "" };
    let modules: String = ["mpm_event", "authz_core", "remoteip"]
        .iter()
        .map(|m| format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"))
        .collect();
    fs::write(
        web.dir.join("apache2.conf"),
        format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/apache2.pid\nMutex file:{d} default\n\
             {modules}User nobody\nGroup nogroup\nServerName origin.example\nListen 80\n\
             ErrorLog {d}/error.log\nLogLevel notice\nDocumentRoot {d}/www\n\
             LogFormat \"%a|%{{CF-Connecting-IP}}i|%U\" cfa\nCustomLog {d}/access.log cfa\n\
             {bogus}IncludeOptional {d}/conf-enabled/*.conf\n"
        ),
    )
    .unwrap();
}

#[test]
fn apache_trusts_cf_connecting_ip_from_the_allowlist_only() {
    let mut web = Web::new("apache");
    let d = web.d();
    for sub in ["conf-enabled", "www"] {
        fs::create_dir(web.dir.join(sub)).unwrap();
    }
    apache_conf(&web, false);
    // apachectl with APACHE_CONFDIR: `apache2 -d DIR -t` / `-k graceful`, the same commands
    // the default `apachectl configtest` / `apachectl graceful` run on the host's /etc/apache2.
    let ctl = format!("env, APACHE_CONFDIR={d}, apachectl");
    web.config(&format!(
        "  apache: {{ path: {d}/conf-enabled/cf-allowlist-remoteip.conf, test: [{ctl}, configtest], reload: [{ctl}, graceful] }}\n"
    ));
    web.server = Some(Daemon::start(
        &web.env.ns,
        "apache2",
        "apache2",
        &[
            "-d",
            &d,
            "-f",
            &format!("{d}/apache2.conf"),
            "-D",
            "FOREGROUND",
        ],
    ));
    wait_for("Apache to answer", Duration::from_secs(10), || {
        testkit::tcp::connect(&web.client, ALLOWED.0, ALLOWED.1, 80)
            .eq("ok")
            .then_some(())
    });
    let ours = web.dir.join("conf-enabled/cf-allowlist-remoteip.conf");
    web_server_story(
        &mut web,
        "apache",
        &ours,
        &|w| w.count("error.log", "SIGUSR1 received"),
        &apache_conf,
    );
}

/// A private Fail2Ban: jails `inherit` (no ignoreip of its own: [DEFAULT]'s) and `own` (its
/// own), a filter matching `auth failure from <HOST>`, the dummy action, and its server.
struct Jails {
    server: Option<Daemon>,
    env: Env,
    dir: PathBuf,
}

impl Drop for Jails {
    fn drop(&mut self) {
        drop(self.server.take());
    }
}

impl Jails {
    fn new() -> Jails {
        let env = Env::new("f2b");
        let dir = env.path("f2b");
        let d = dir.display().to_string();
        for sub in ["", "jail.d", "filter.d", "action.d"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let files = [
            (
                "fail2ban.conf",
                format!("[Definition]\nloglevel = INFO\nlogtarget = {d}/f2b.log\nsocket = {d}/f2b.sock\npidfile = {d}/f2b.pid\ndbfile = :memory:\n"),
            ),
            (
                "filter.d/cfa.conf",
                "[Definition]\nfailregex = ^auth failure from <HOST>$\ndatepattern = {NONE}\n".to_string(),
            ),
            (
                "jail.conf",
                format!(
                    "[DEFAULT]\nbackend = polling\nfilter = cfa\naction = dummy[target={d}/dummy]\n\
                     maxretry = 2\nfindtime = 1h\nbantime = 1h\nenabled = false\n\n\
                     [inherit]\nenabled = true\nlogpath = {d}/inherit.log\n\n\
                     [own]\nenabled = true\nlogpath = {d}/own.log\nignoreip = 192.0.2.20\n"
                ),
            ),
            (
                "jail.local",
                "[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 192.0.2.10\n".to_string(),
            ),
            ("inherit.log", String::new()),
            ("own.log", String::new()),
        ];
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        fs::copy(
            "/etc/fail2ban/action.d/dummy.conf",
            dir.join("action.d/dummy.conf"),
        )
        .expect("fail2ban installed");
        let server = Daemon::start(
            &env.ns,
            "fail2ban-server",
            "fail2ban-server",
            &[
                "-f",
                "-x",
                "-c",
                &d,
                "-s",
                &format!("{d}/f2b.sock"),
                "-p",
                &format!("{d}/f2b.pid"),
                "--logtarget",
                &format!("{d}/f2b.log"),
            ],
        );
        let jails = Jails {
            server: Some(server),
            env,
            dir,
        };
        wait_for("fail2ban-server to answer", Duration::from_secs(15), || {
            jails
                .env
                .ns
                .exec("fail2ban-client", &["-c", &d, "ping"])
                .0
                .then_some(())
        });
        jails
            .env
            .config(&format!("outputs:\n  fail2ban: {{ dir: {d} }}\n"));
        jails
    }

    fn client(&self, args: &[&str]) -> String {
        let d = self.dir.display().to_string();
        let mut all = vec!["-c", d.as_str()];
        all.extend_from_slice(args);
        self.env.ns.exec_ok("fail2ban-client", &all)
    }

    /// `get JAIL ignoreip`, as a set (Fail2Ban normalises and reorders).
    fn ignoreip(&self, jail: &str) -> std::collections::BTreeSet<String> {
        self.client(&["get", jail, "ignoreip"])
            .lines()
            .filter_map(|l| l.strip_prefix("|- ").or_else(|| l.strip_prefix("`- ")))
            .map(|s| s.trim().to_string())
            .collect()
    }

    fn banned(&self, jail: &str) -> Vec<String> {
        self.client(&["get", jail, "banip"])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn reloads(&self) -> usize {
        fs::read_to_string(self.dir.join("f2b.log"))
            .map(|t| t.matches("Reload finished").count())
            .unwrap_or(0)
    }
}

#[test]
fn fail2ban_ignores_the_ranges_in_every_jail_and_reports_banned_cloudflare_addresses() {
    let f = Jails::new();
    let inherit = f.ignoreip("inherit");
    let own = f.ignoreip("own");
    assert_eq!(
        inherit,
        ["127.0.0.0/8", "::1", "192.0.2.10"]
            .map(String::from)
            .into(),
        "the operator's [DEFAULT]"
    );
    assert_eq!(own, ["192.0.2.20".to_string()].into());

    let j = f.env.run(&["sync", "--output", "json"]).expect(0).json();
    let out = &j["outputs"][0];
    assert_eq!(
        (out["name"].clone(), out["reloaded"].clone()),
        ("fail2ban".into(), true.into()),
        "{j}"
    );
    assert_eq!(f.reloads(), 1);
    let ranges: Vec<String> = lines(V4).into_iter().chain(lines(V6)).collect();
    let with = |base: &std::collections::BTreeSet<String>| {
        let mut s = base.clone();
        s.extend(ranges.iter().cloned());
        s
    };
    assert_eq!(
        f.ignoreip("inherit"),
        with(&inherit),
        "[DEFAULT]'s entries kept"
    );
    assert_eq!(f.ignoreip("own"), with(&own), "the jail's own entries kept");

    // A degraded run (offline: the cache serves, here a cache missing one range) is add-only
    // for the outputs too: the range stays in the drop-in.
    let state = f.env.state_file();
    let mut cache: Value = serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    for source in cache["sources"].as_object_mut().unwrap().values_mut() {
        source["cidrs"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c != "173.245.48.0/20");
    }
    fs::write(&state, cache.to_string()).unwrap();
    let j = f
        .env
        .run(&["sync", "--offline", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(j["degraded"], true, "{j}");
    assert_eq!(j["outputs"][0]["changed"], false, "{j}");
    assert!(f.ignoreip("own").contains("173.245.48.0/20"));
    assert_eq!(f.reloads(), 1);

    // Through the log: failures from inside a Cloudflare range are ignored, a stranger's ban.
    let log = f.dir.join("inherit.log");
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str("auth failure from 104.16.0.5\n");
    }
    for _ in 0..3 {
        text.push_str("auth failure from 192.0.2.99\n");
    }
    fs::write(&log, text).unwrap();
    wait_for("the stranger's ban", Duration::from_secs(20), || {
        f.banned("inherit")
            .contains(&"192.0.2.99".to_string())
            .then_some(())
    });
    assert!(
        !f.banned("inherit").contains(&"104.16.0.5".to_string()),
        "{:?}",
        f.banned("inherit")
    );

    // A ban by hand (banip bypasses ignoreip) is reported; a no-op sync reloads nothing.
    f.client(&["set", "own", "banip", "104.16.0.6"]);
    let j = f.env.run(&["sync", "--output", "json"]).expect(0).json();
    assert_eq!(j["outputs"][0]["changed"], false);
    let warnings = j["warnings"].to_string();
    assert!(
        warnings.contains("jail own has banned 104.16.0.6") && warnings.contains("unbanip"),
        "{warnings}"
    );
    assert!(!warnings.contains("192.0.2.99"), "{warnings}");
    assert_eq!(f.reloads(), 1);

    // Purge gives every jail back exactly the operator's ignoreip.
    f.env.run(&["purge"]).expect(0);
    assert_eq!(f.reloads(), 2);
    assert!(!f.dir.join("jail.d/zz-cf-allowlist.local").exists());
    assert_eq!(f.ignoreip("inherit"), inherit);
    assert_eq!(f.ignoreip("own"), own);
}
