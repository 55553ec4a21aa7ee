//! The differential test: random rulesets loaded into a real kernel (in a network namespace),
//! real TCP SYNs and UDP datagrams sent from a veth peer, and the evaluator's verdict compared
//! with what each packet met. Accept = connected / answered, drop = timed out, reject = an
//! error (RST or ICMP unreachable).
//!
//! `NFT_DIFF_CASES` (default 120) sets the number of rulesets, `NFT_DIFF_SEED` the first seed.

mod nft_gen;

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cfa_eval::nft::Ruleset;
use cfa_eval::{combine, Evaluate, Packet, Verdict, L4};
use nft_gen::{Gen, CLIENT_V4, CLIENT_V6, PORTS, SERVER_V4, SERVER_V6};
use testkit::NetNs;

/// Answers TCP connections and echoes UDP datagrams on `ports`, both families, until killed.
struct Server(Child);

impl Server {
    fn start(ns: &NetNs, ports: &[u16]) -> Server {
        let code = r#"
import socket, sys, threading
def tcp(port):
    s = socket.create_server(('::', port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=512)
    while True:
        c, _ = s.accept()
        c.close()
def udp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(('::', port))
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(data, peer)
for p in sys.argv[1:]:
    threading.Thread(target=tcp, args=(int(p),)).start()
    threading.Thread(target=udp, args=(int(p),)).start()
"#;
        let child = ns
            .command("python3")
            .args(["-c", code])
            .args(ports.iter().map(u16::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 server");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Source ports for probes: each probe of a lab gets the next one, so no packet meets a
/// conntrack entry an earlier probe left (it would be `established`, not `new`).
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

fn source_port() -> u32 {
    20_000 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 40_000
}

/// Sends every probe (proto, src, dst, port) at once from `ns`, each from a fresh source port;
/// each answers "ok", "timeout" or "error ...".
fn probe(ns: &NetNs, probes: &[(L4, String, String, u16)], timeout: f64) -> Vec<String> {
    let code = r#"
import socket, struct, sys, threading
timeout = float(sys.argv[1])
lines = sys.stdin.read().split('\n')
probes = [l.split() for l in lines if l.strip()]
out = [None] * len(probes)
def run(i, proto, src, sport, dst, port):
    fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Close with a reset: no orphaned socket holds the port.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.settimeout(timeout)
    if proto == 'udp':
        # IP_RECVERR / IPV6_RECVERR: report every ICMP error, not only the "hard" ones.
        if fam == socket.AF_INET:
            s.setsockopt(socket.SOL_IP, 11, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, 25, 1)
    try:
        s.bind((src, int(sport)))
        s.connect((dst, int(port)))
        if proto == 'udp':
            s.send(b'x')
            s.recv(100)
        out[i] = 'ok'
    except socket.timeout:
        # An ICMP error that came back while connect() still held the socket is kept as a
        # soft error (TcpExtLockDroppedIcmps), which SO_ERROR reports.
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        out[i] = 'error %d' % err if err else 'timeout'
    except OSError as e:
        out[i] = 'error ' + str(e.errno)
    finally:
        s.close()
threads = [threading.Thread(target=run, args=(i, *p)) for i, p in enumerate(probes)]
for t in threads: t.start()
for t in threads: t.join()
print('\n'.join(out))
"#;
    let input: String = probes
        .iter()
        .map(|(p, s, d, port)| format!("{} {s} {} {d} {port}\n", p.name(), source_port()))
        .collect();
    let mut child = ns
        .command("python3")
        .args(["-c", code, &timeout.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3 prober");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("prober output");
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(
        results.len(),
        probes.len(),
        "prober answered {} of {} probes: {}",
        results.len(),
        probes.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

fn mac(ns: &NetNs, dev: &str) -> String {
    let out = ns.exec_ok("cat", &[&format!("/sys/class/net/{dev}/address")]);
    out.trim().to_string()
}

/// The verdict a probe's result shows.
fn seen(result: &str) -> Verdict {
    match result {
        "ok" => Verdict::Accept,
        "timeout" => Verdict::Drop,
        _ => Verdict::Reject,
    }
}

/// Loads `text` into the server namespace (`nft -f -`); Err with nft's message if refused.
fn load(ns: &NetNs, text: &str) -> Result<(), String> {
    match ns.exec_input("nft", &["-f", "-"], text) {
        (true, _, _) => Ok(()),
        (false, _, err) => Err(err),
    }
}

/// What a worker saw.
#[derive(Default)]
struct Stats {
    rulesets: u64,
    refused_by_nft: u64,
    packets: u64,
    accepts: u64,
    drops: u64,
    rejects: u64,
    unknown: u64,
    retried: u64,
    refusal_kind_open: u64,
    failures: Vec<String>,
}

/// A server and a client namespace on one link, the server answering on [`PORTS`].
struct Lab {
    server: NetNs,
    client: NetNs,
    _srv: Server,
    probes: Vec<(L4, String, String, u16)>,
}

impl Lab {
    fn new() -> Lab {
        let server = NetNs::new("nftsrv");
        let client = NetNs::new("nftcli");
        let here = [format!("{SERVER_V4}/16"), format!("{SERVER_V6}/64")];
        let there: Vec<String> = CLIENT_V4
            .iter()
            .map(|a| format!("{a}/16"))
            .chain(CLIENT_V6.iter().map(|a| format!("{a}/64")))
            .collect();
        let here: Vec<&str> = here.iter().map(String::as_str).collect();
        let there: Vec<&str> = there.iter().map(String::as_str).collect();
        let (sdev, cdev) = server.link(&client, &here, &there);
        // Permanent neighbours: a ruleset that drops ICMPv6 must not break neighbour
        // discovery, or an accepted SYN would look dropped.
        let (smac, cmac) = (mac(&server, &sdev), mac(&client, &cdev));
        for a in CLIENT_V4.iter().chain(&CLIENT_V6) {
            server.exec_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    a,
                    "lladdr",
                    &cmac,
                    "dev",
                    &sdev,
                    "nud",
                    "permanent",
                ],
            );
        }
        for a in [SERVER_V4, SERVER_V6] {
            client.exec_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    a,
                    "lladdr",
                    &smac,
                    "dev",
                    &cdev,
                    "nud",
                    "permanent",
                ],
            );
        }
        // The client sends only the SYN of each connection: the server's answer to the
        // handshake's ACK (a reject for `ct state established`) would otherwise reach the
        // client's socket as a soft error and make an accepted SYN look refused.
        client.exec_ok(
            "nft",
            &[
                "add table inet probe { chain out { type filter hook output priority 0; \
               policy accept; meta l4proto tcp tcp flags & (syn|ack) != syn drop; }; }",
            ],
        );
        // Half-open connections pile up on the server: answer with SYN cookies, keep no state.
        server.exec_ok("sysctl", &["-qw", "net.ipv4.tcp_syncookies=2"]);
        // conntrack's sysctls exist once its module is loaded: a ct expression loads it.
        load(
            &server,
            "table inet warm { chain c { ct state new counter; }; }\n",
        )
        .unwrap();
        load(&server, "delete table inet warm\n").unwrap();
        // Forget probes' conntrack entries soon (source ports come round again after 40000).
        server.exec_ok(
            "sysctl",
            &[
                "-qw",
                "net.netfilter.nf_conntrack_udp_timeout=5",
                "net.netfilter.nf_conntrack_udp_timeout_stream=5",
                "net.netfilter.nf_conntrack_tcp_timeout_syn_recv=5",
                "net.netfilter.nf_conntrack_tcp_timeout_established=5",
            ],
        );
        // Every reject must answer: no ICMP rate limit in the server namespace.
        server.exec_ok("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0"]);
        server.exec_ok("sysctl", &["-qw", "net.ipv6.icmp.ratelimit=0"]);
        let srv = Server::start(&server, &PORTS);

        let mut probes: Vec<(L4, String, String, u16)> = Vec::new();
        for proto in [L4::Tcp, L4::Udp] {
            for (srcs, dst) in [(&CLIENT_V4, SERVER_V4), (&CLIENT_V6, SERVER_V6)] {
                for src in srcs.iter() {
                    for port in PORTS {
                        probes.push((proto, src.to_string(), dst.to_string(), port));
                    }
                }
            }
        }
        // Wait for the server (no ruleset yet: everything answers).
        let start = Instant::now();
        loop {
            let r = probe(&client, &probes, 0.5);
            if r.iter().all(|x| x == "ok") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the server never answered every probe: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Lab {
            server,
            client,
            _srv: srv,
            probes,
        }
    }

    /// Loads the ruleset of each seed, probes, compares.
    fn run(&self, seeds: impl Iterator<Item = u64>, cases: u64, stats: &mut Stats) {
        for seed in seeds {
            if stats.rulesets >= cases || stats.failures.len() > 5 {
                break;
            }
            self.case(seed, cases, stats);
        }
    }

    fn case(&self, seed: u64, cases: u64, st: &mut Stats) {
        let (server, client, probes) = (&self.server, &self.client, &self.probes);
        let generated = Gen::new(seed).ruleset();
        if let Err(e) = load(server, &generated.text) {
            st.refused_by_nft += 1;
            if std::env::var_os("NFT_DIFF_SHOW_REFUSED").is_some() {
                eprintln!("seed {seed} refused by nft:\n{}\n{e}", generated.text);
            }
            assert!(
                st.refused_by_nft <= cases / 10 + 3,
                "nft refuses too many generated rulesets; last (seed {seed}):\n{}\n{e}",
                generated.text
            );
            return;
        }
        st.rulesets += 1;
        let json = server.exec_ok("nft", &["-j", "list", "ruleset"]);
        let ruleset = Ruleset::parse(&json)
            .unwrap_or_else(|e| panic!("seed {seed}: parse failed: {e}\n{}", generated.text));
        let packet = |i: usize| {
            let (proto, src, _, port) = &probes[i];
            Packet {
                src: src.parse::<IpAddr>().unwrap(),
                dport: *port,
                proto: *proto,
            }
        };
        let mut results = probe(client, probes, 0.3);
        // A lone timeout where a reject was expected may be an ICMP error the kernel's global
        // rate limit swallowed (the probes go out at once): ask that one again, alone.
        for i in 0..probes.len() {
            let want = combine(&ruleset.evaluate(&packet(i))).verdict;
            // Likewise a timeout where an accept is expected may be a loaded machine: a real
            // drop never answers, so asking again with a longer wait can only show what the
            // kernel really does.
            if matches!(want, Verdict::Reject | Verdict::Accept) && results[i] == "timeout" {
                st.retried += 1;
                results[i] = probe(client, &probes[i..=i], 1.5).remove(0);
            }
        }
        for (i, result) in results.iter().enumerate() {
            st.packets += 1;
            let packet = packet(i);
            let hooks = ruleset.evaluate(&packet);
            let decision = combine(&hooks);
            let got = seen(result);
            match &decision.verdict {
                Verdict::Unknown(why) => {
                    st.unknown += 1;
                    if generated.undecidable.is_empty() {
                        st.failures.push(format!(
                            "seed {seed}: {packet}: evaluator says unknown ({why}) for a ruleset \
                             of supported features only; kernel: {result}\n{}",
                            generated.text
                        ));
                    }
                }
                want => {
                    match want {
                        Verdict::Accept => st.accepts += 1,
                        Verdict::Drop => st.drops += 1,
                        _ => st.rejects += 1,
                    }
                    // `combine` names the first certain refusal; a chain before it that the
                    // evaluator left open may refuse first, another way: drop and reject are
                    // then both right (accept is not).
                    let by = decision.by.as_ref().map_or(i64::MAX, |b| b.priority);
                    let open_before = hooks
                        .iter()
                        .any(|h| matches!(h.verdict, Verdict::Unknown(_)) && h.priority <= by);
                    if *want != got && want.is_refusal() && got.is_refusal() && open_before {
                        st.refusal_kind_open += 1;
                    } else if *want != got {
                        st.failures.push(format!(
                            "seed {seed}: {packet}: evaluator {want} (by {:?}), kernel {got} \
                             ({result})\nhooks: {hooks:#?}\n{}",
                            decision.by.as_ref().and_then(|b| b.rule.clone()),
                            generated.text
                        ));
                    }
                }
            }
        }
    }
}

#[test]
fn evaluator_agrees_with_the_kernel_on_random_rulesets() {
    testkit::require_root();
    let cases: u64 = std::env::var("NFT_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed0: u64 = std::env::var("NFT_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let begun = Instant::now();
    // Two labs side by side (the time goes into waiting for timeouts): even and odd seeds.
    let workers: Vec<std::thread::JoinHandle<Stats>> = (0..2u64)
        .map(|w| {
            std::thread::spawn(move || {
                let lab = Lab::new();
                let mut stats = Stats::default();
                let share = cases / 2 + (cases % 2) * (1 - w);
                lab.run((0..).map(|k| seed0 + 2 * k + w), share, &mut stats);
                stats
            })
        })
        .collect();
    let mut all = Stats::default();
    for w in workers {
        let s = w.join().expect("a differential worker panicked");
        all.rulesets += s.rulesets;
        all.refused_by_nft += s.refused_by_nft;
        all.packets += s.packets;
        all.accepts += s.accepts;
        all.drops += s.drops;
        all.rejects += s.rejects;
        all.unknown += s.unknown;
        all.retried += s.retried;
        all.refusal_kind_open += s.refusal_kind_open;
        all.failures.extend(s.failures);
    }
    eprintln!(
        "nft differential: {} rulesets ({} more refused by nft), {} packets (TCP SYN and UDP); \
         evaluator said {} accept, {} drop, {} reject, {} unknown (rulesets with undecidable \
         features only); {} reject probes asked again; {} refusals of the other kind after a \
         chain left open; {} disagreements; {:.1}s",
        all.rulesets,
        all.refused_by_nft,
        all.packets,
        all.accepts,
        all.drops,
        all.rejects,
        all.unknown,
        all.retried,
        all.refusal_kind_open,
        all.failures.len(),
        begun.elapsed().as_secs_f64()
    );
    assert!(
        all.failures.is_empty(),
        "{} disagreements with the kernel:\n{}",
        all.failures.len(),
        all.failures.join("\n----\n")
    );
}
