//! The iptables evaluator against the kernel: random valid rulesets (every table on the input
//! path, user chains, jumps, gotos, returns, policies, ipsets of each modelled type, conntrack
//! states, notrack, marks, connmarks, addrtype, iprange, REJECT) are loaded into a namespace
//! with iptables-legacy and with iptables-nft, read back with `*-save` and `ipset save`, and
//! every verdict the evaluator gives must equal what real packets from a veth peer meet: a TCP
//! SYN or UDP datagram that is answered is an accept, one that gets an error (RST, ICMP
//! unreachable) a reject, one that gets nothing within the timeout a drop. ufw's real chains
//! are checked the same way.
//!
//! Needs root (`testkit::require_root` fails the test otherwise). `CFA_EVAL_CASES` sets the
//! rulesets per variant (default 70), `CFA_EVAL_SEED` the random seed; to chase a
//! disagreement, `CFA_EVAL_FROM=N` skips loading the cases before N (the same rulesets are
//! generated) and `CFA_EVAL_DUMP=DIR` writes each case's restore texts there.
//!
//! Two artefacts of a veth lab are kept out of the comparison, not tolerated: an ICMP error
//! that arrives while `connect()` still holds the socket lock is only a soft error (the prober
//! reads it from the error queue, `IP_RECVERR`), and a REJECT of the handshake's last ACK
//! would fail an accepted SYN (every generated filter INPUT first accepts non-SYN TCP, which
//! never matches the SYN under test). The generator never writes `! -i +`, which
//! iptables-legacy-save prints as nothing (an unconditional rule): the save text itself is
//! wrong there.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use cfa_eval::ipt::Ruleset;
use cfa_eval::{combine, Evaluate, Packet, Verdict, L4};
use testkit::NetNs;

const SERVER4: &str = "10.255.255.1";
const SERVER6: &str = "2001:db8:ffff::1";
const PORTS: [u16; 4] = [22, 80, 443, 8080];
/// The client's source addresses: nested prefixes of them are what rules and sets match.
const POOL4: [&str; 8] = [
    "10.1.0.1",
    "10.1.0.2",
    "10.1.0.129",
    "10.1.1.1",
    "10.1.128.1",
    "10.2.0.1",
    "10.130.0.1",
    "10.200.3.4",
];
const POOL6: [&str; 8] = [
    "2001:db8:1::1",
    "2001:db8:1::2",
    "2001:db8:1::81",
    "2001:db8:1:1::1",
    "2001:db8:1:8000::1",
    "2001:db8:2::1",
    "2001:db8:8000::1",
    "2001:db8:c8:3::4",
];
const TIMEOUT_S: f64 = 0.3;

// ---------------------------------------------------------------------------------------------
// The lab: a server namespace (the firewall under test, listeners on TCP and UDP) and a client
// namespace holding every pool address, with static neighbours so that no ND/ARP reply has to
// pass the random firewall.

const UDP_ECHO: &str = "import socket, sys, threading\n\
def serve(fam, addr, port):\n    s = socket.socket(fam, socket.SOCK_DGRAM)\n    \
if fam == socket.AF_INET6:\n        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n    \
s.bind((addr, port))\n    while True:\n        d, a = s.recvfrom(2048)\n        s.sendto(d, a)\n\
for p in sys.argv[1:]:\n    \
threading.Thread(target=serve, args=(socket.AF_INET, '0.0.0.0', int(p))).start()\n    \
threading.Thread(target=serve, args=(socket.AF_INET6, '::', int(p))).start()\n";

/// Reads batches of `[src, dst, port, proto]` (one JSON array a line) and answers each batch
/// with one JSON array of "ok" / "timeout" / "error ERRNO", probing all in parallel.
const PROBER: &str = r#"import json, socket, sys, time, select, errno
T = float(sys.argv[1])
for line in sys.stdin:
    items = json.loads(line)
    res = [None] * len(items)
    poller = select.poll()
    live = {}
    for i, (src, dst, port, proto) in enumerate(items):
        fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
            else:
                s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
            if proto == 'udp':
                s.connect((dst, port))
                s.send(b'probe')
                poller.register(s.fileno(), select.POLLIN | select.POLLERR)
            else:
                rc = s.connect_ex((dst, port))
                if rc not in (0, errno.EINPROGRESS):
                    res[i] = 'error ' + errno.errorcode.get(rc, str(rc))
                    s.close()
                    continue
                poller.register(s.fileno(), select.POLLOUT | select.POLLERR)
        except OSError as e:
            res[i] = 'error ' + errno.errorcode.get(e.errno or 0, str(e))
            s.close()
            continue
        live[s.fileno()] = (i, s, proto)
    deadline = time.monotonic() + T
    while live:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, ev in poller.poll(left * 1000):
            if fd not in live:
                continue
            i, s, proto = live.pop(fd)
            poller.unregister(fd)
            if proto == 'tcp':
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0 and ev & select.POLLERR:
                    # An ICMP error that came while connect() held the socket lock is only
                    # a soft error; with IP_RECVERR it waits in the error queue.
                    try:
                        _, anc, _, _ = s.recvmsg(1, 1024, socket.MSG_ERRQUEUE)
                        err = int.from_bytes(anc[0][2][:4], 'little') if anc else errno.EIO
                    except OSError as e:
                        err = e.errno or errno.EIO
                res[i] = 'ok' if err == 0 else 'error ' + errno.errorcode.get(err, str(err))
            else:
                try:
                    s.recv(100)
                    res[i] = 'ok'
                except OSError as e:
                    res[i] = 'error ' + errno.errorcode.get(e.errno or 0, str(e))
            s.close()
    for fd, (i, s, proto) in live.items():
        res[i] = 'timeout'
        s.close()
    print(json.dumps(res), flush=True)
"#;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Prober {
    _child: Daemon,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Prober {
    fn start(ns: &NetNs) -> Prober {
        let mut child = ns
            .command("python3")
            .args(["-c", PROBER, &TIMEOUT_S.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the prober");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Prober {
            _child: Daemon(child),
            stdin,
            stdout,
        }
    }

    /// Sends every packet at once; what each met.
    fn probe(&mut self, packets: &[Packet]) -> Vec<String> {
        let items: Vec<serde_json::Value> = packets
            .iter()
            .map(|p| {
                let dst = if p.src.is_ipv6() { SERVER6 } else { SERVER4 };
                serde_json::json!([p.src.to_string(), dst, p.dport, p.proto.name()])
            })
            .collect();
        writeln!(self.stdin, "{}", serde_json::Value::Array(items)).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("prober answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("prober said {line:?}: {e}"))
    }
}

struct Lab {
    server: NetNs,
    _client: NetNs,
    prober: Prober,
    _tcp: testkit::tcp::Listener,
    _udp: Daemon,
}

fn mac(ns: &NetNs, dev: &str) -> String {
    let out = ns.exec_ok("ip", &["-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().expect("a MAC address").to_string()
}

impl Lab {
    fn new(tag: &str) -> Lab {
        testkit::require_root();
        let server = NetNs::new(&format!("{tag}s"));
        let client = NetNs::new(&format!("{tag}c"));
        let here = [format!("{SERVER4}/8"), format!("{SERVER6}/32")];
        let there: Vec<String> = POOL4
            .iter()
            .map(|a| format!("{a}/8"))
            .chain(POOL6.iter().map(|a| format!("{a}/32")))
            .collect();
        let here: Vec<&str> = here.iter().map(String::as_str).collect();
        let there: Vec<&str> = there.iter().map(String::as_str).collect();
        let (a, b) = server.link(&client, &here, &there);
        let (mac_a, mac_b) = (mac(&server, &a), mac(&client, &b));
        for addr in POOL4.iter().chain(&POOL6) {
            server.exec_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac_b,
                    "dev",
                    &a,
                    "nud",
                    "permanent",
                ],
            );
        }
        for addr in [SERVER4, SERVER6] {
            client.exec_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac_a,
                    "dev",
                    &b,
                    "nud",
                    "permanent",
                ],
            );
        }
        // Every REJECT must be seen: no ICMP rate limit in the server's namespace.
        for kv in ["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"] {
            server.exec_ok("sysctl", &["-qw", kv]);
        }
        for kv in [
            "net.ipv4.icmp_msgs_per_sec=1000000",
            "net.ipv4.icmp_msgs_burst=1000000",
        ] {
            let _ = server.exec("sysctl", &["-qw", kv]);
        }
        let tcp = testkit::tcp::Listener::start(&server, &PORTS);
        let udp = Daemon(
            server
                .command("python3")
                .args(["-c", UDP_ECHO])
                .args(PORTS.iter().map(u16::to_string))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the UDP echo server"),
        );
        let prober = Prober::start(&client);
        let mut lab = Lab {
            server,
            _client: client,
            prober,
            _tcp: tcp,
            _udp: udp,
        };
        lab.wait_ready();
        lab
    }

    /// Every pool address reaches every port on both protocols with no firewall.
    fn wait_ready(&mut self) {
        let all = all_packets();
        let start = Instant::now();
        loop {
            let got = self.prober.probe(&all);
            if got.iter().all(|g| g == "ok") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the lab never answered every probe: {:?}",
                all.iter()
                    .zip(&got)
                    .filter(|(_, g)| *g != "ok")
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn all_packets() -> Vec<Packet> {
    let mut out = Vec::new();
    for src in POOL4.iter().chain(&POOL6) {
        for port in PORTS {
            for proto in [L4::Tcp, L4::Udp] {
                out.push(Packet {
                    src: src.parse().unwrap(),
                    dport: port,
                    proto,
                });
            }
        }
    }
    out
}

fn kernel_verdict(got: &str) -> Verdict {
    match got {
        "ok" => Verdict::Accept,
        "timeout" => Verdict::Drop,
        g if g.starts_with("error") => Verdict::Reject,
        g => panic!("prober said {g:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Random valid rulesets.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn bang(&mut self, p: u64) -> &'static str {
        if self.pct(p) {
            "! "
        } else {
            ""
        }
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(b: u128, v6: bool) -> String {
    if v6 {
        std::net::Ipv6Addr::from(b).to_string()
    } else {
        std::net::Ipv4Addr::from(b as u32).to_string()
    }
}

struct Gen<'r> {
    rng: &'r mut Rng,
    v6: bool,
    /// Expressions the evaluator declares undecidable that this case uses.
    unsupported: Vec<String>,
    sets: Vec<(String, bool)>, // (name, has a port dimension)
    lists: Vec<String>,
    veth: String,
}

impl Gen<'_> {
    fn pool(&self) -> Vec<IpAddr> {
        let p: &[&str] = if self.v6 { &POOL6 } else { &POOL4 };
        p.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn width(&self) -> u32 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// A prefix around a pool address: it holds some pool addresses and not others.
    fn prefix(&mut self, min: u32) -> (u128, u32) {
        let lens: &[u32] = if self.v6 {
            &[32, 33, 47, 48, 49, 63, 64, 65, 120, 127, 128]
        } else {
            &[8, 9, 12, 15, 16, 17, 23, 24, 25, 31, 32]
        };
        let pool = self.pool();
        let a = bits(*self.rng.pick(&pool));
        let len = (*self.rng.pick(lens)).max(min);
        let w = self.width();
        let all = u128::MAX >> (128 - w);
        let mask = all & !all.checked_shr(len).unwrap_or(0);
        (a & mask, len)
    }

    fn prefix_text(&mut self, min: u32) -> String {
        let (a, len) = self.prefix(min);
        format!("{}/{len}", addr(a, self.v6))
    }

    fn ipset(&mut self, out: &mut String) {
        let fam = if self.v6 { "inet6" } else { "inet" };
        let tag = if self.v6 { 6 } else { 4 };
        let n = self.rng.below(4);
        for k in 0..n {
            let name = format!("s{tag}_{k}");
            let kind = self.rng.below(6);
            match kind {
                0 | 1 => {
                    out.push_str(&format!("create {name} hash:net family {fam}\n"));
                    for _ in 0..1 + self.rng.below(4) {
                        let p = self.prefix(1);
                        let nomatch = if self.rng.pct(35) { " nomatch" } else { "" };
                        out.push_str(&format!(
                            "add {name} {}/{}{nomatch}\n",
                            addr(p.0, self.v6),
                            p.1
                        ));
                    }
                    self.sets.push((name, false));
                }
                2 => {
                    let netmask = if self.rng.pct(30) {
                        if self.v6 {
                            " netmask 64"
                        } else {
                            " netmask 24"
                        }
                    } else {
                        ""
                    };
                    out.push_str(&format!("create {name} hash:ip family {fam}{netmask}\n"));
                    let pool = self.pool();
                    for _ in 0..1 + self.rng.below(3) {
                        out.push_str(&format!("add {name} {}\n", self.rng.pick(&pool)));
                    }
                    self.sets.push((name, false));
                }
                3 | 4 => {
                    let t = if kind == 3 {
                        "hash:ip,port"
                    } else {
                        "hash:net,port"
                    };
                    out.push_str(&format!("create {name} {t} family {fam}\n"));
                    let pool = self.pool();
                    for _ in 0..1 + self.rng.below(4) {
                        let a = if kind == 3 {
                            self.rng.pick(&pool).to_string()
                        } else {
                            self.prefix_text(1)
                        };
                        let proto = self.rng.pick(&["tcp", "udp"]);
                        let port = self.rng.pick(&PORTS);
                        out.push_str(&format!("add {name} {a},{proto}:{port}\n"));
                    }
                    self.sets.push((name, true));
                }
                _ => {
                    if self.sets.is_empty() {
                        continue;
                    }
                    out.push_str(&format!("create {name} list:set\n"));
                    // A list:set cannot hold another list:set.
                    let members: Vec<(String, bool)> = self
                        .sets
                        .iter()
                        .filter(|(n, _)| !self.lists.contains(n))
                        .cloned()
                        .collect();
                    let mut any_port = false;
                    for (m, port) in members.iter().filter(|_| self.rng.pct(60)) {
                        out.push_str(&format!("add {name} {m}\n"));
                        any_port |= port;
                    }
                    self.lists.push(name.clone());
                    self.sets.push((name, any_port));
                }
            }
        }
    }

    /// `-p` and what depends on it: ports, tcp flags.
    fn proto(&mut self, s: &mut Vec<String>, proto_known: &mut Option<&'static str>) {
        let other = if self.v6 { "ipv6-icmp" } else { "icmp" };
        let choice = self.rng.below(10);
        let (bang, p) = match choice {
            0 => ("! ", "tcp"),
            1 => ("! ", "udp"),
            2 => ("", other),
            3..=6 => ("", "tcp"),
            _ => ("", "udp"),
        };
        s.push(format!("{bang}-p {p}"));
        if !bang.is_empty() || p == other {
            return;
        }
        *proto_known = Some(p);
        let ports = |rng: &mut Rng| -> String {
            match rng.below(4) {
                0 => {
                    let (a, b) = (
                        *rng.pick(&[20u16, 22, 80, 81]),
                        *rng.pick(&[22u16, 443, 8080, 9000]),
                    );
                    // multiport wants a < b strictly.
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{}:{}", a.min(b), a.max(b))
                    }
                }
                _ => rng.pick(&PORTS).to_string(),
            }
        };
        match self.rng.below(6) {
            0 | 1 => {
                let b = self.rng.bang(25);
                let pp = ports(self.rng);
                s.push(format!("-m {p} {b}--dport {pp}"));
            }
            2 => {
                let n = 1 + self.rng.below(3);
                let list: Vec<String> = (0..n).map(|_| ports(self.rng)).collect();
                let b = self.rng.bang(25);
                s.push(format!("-m multiport {b}--dports {}", list.join(",")));
            }
            3 if p == "tcp" => {
                let b = self.rng.bang(30);
                let flags = self.rng.pick(&[
                    "--syn",
                    "--tcp-flags FIN,SYN,RST,ACK SYN",
                    "--tcp-flags SYN,ACK ACK",
                    "--tcp-flags ALL NONE",
                    "--tcp-flags SYN SYN",
                ]);
                s.push(format!("-m tcp {b}{flags}"));
            }
            4 if self.rng.pct(30) => {
                // Unsupported: the source port.
                s.push(format!("-m {p} --sport 1024:65535"));
                self.unsupported.push("--sport".into());
            }
            _ => {}
        }
    }

    fn states(&mut self, conntrack: bool) -> String {
        let mut all = vec!["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"];
        if conntrack {
            all.extend(["SNAT", "DNAT"]);
        }
        let picked: Vec<&str> = all.iter().copied().filter(|_| self.rng.pct(35)).collect();
        if picked.is_empty() {
            self.rng.pick(&all).to_string()
        } else {
            picked.join(",")
        }
    }

    /// Conditions of one rule (never ones the table rejects).
    fn conds(&mut self, proto_known: &mut Option<&'static str>) -> Vec<String> {
        let mut s = Vec::new();
        let n = self.rng.below(4);
        let mut used = [false; 16];
        for _ in 0..n {
            let k = self.rng.below(16);
            // One of each kind per rule (iptables refuses a second -s or -p).
            let group = match k {
                1 => 0,
                3 => 2,
                9 => 8,
                k => k,
            };
            if used[group] {
                continue;
            }
            used[group] = true;
            match k {
                0 | 1 => {
                    let b = self.rng.bang(25);
                    let p = self.prefix_text(0);
                    s.push(format!("{b}-s {p}"));
                }
                2 | 3 => self.proto(&mut s, proto_known),
                4 => {
                    let b = self.rng.bang(30);
                    let st = self.states(true);
                    s.push(format!("-m conntrack {b}--ctstate {st}"));
                }
                5 => {
                    let b = self.rng.bang(30);
                    let st = self.states(false);
                    s.push(format!("-m state {b}--state {st}"));
                }
                6 => {
                    let b = self.rng.bang(50);
                    match self.rng.below(5) {
                        // Not `! -i +`: iptables-legacy-save prints it as nothing at all.
                        0 => s.push("-i +".to_string()),
                        1 => {
                            s.push(format!("{b}-i {}", self.veth));
                            self.unsupported.push("-i ".into());
                        }
                        _ => s.push(format!("{b}-i lo")),
                    }
                }
                7 => {
                    let b = self.rng.bang(30);
                    let types: &[&str] = if self.v6 {
                        &[
                            "LOCAL",
                            "UNICAST",
                            "MULTICAST",
                            "LOCAL,UNICAST",
                            "LOCAL,MULTICAST",
                            "ANYCAST",
                            "UNSPEC",
                            "UNREACHABLE",
                        ]
                    } else {
                        &[
                            "LOCAL",
                            "UNICAST",
                            "BROADCAST",
                            "MULTICAST",
                            "LOCAL,MULTICAST",
                            "BLACKHOLE,LOCAL",
                        ]
                    };
                    let t = self.rng.pick(types);
                    s.push(format!("-m addrtype {b}--dst-type {t}"));
                }
                8 | 9 if !self.sets.is_empty() => {
                    let (name, port) = self.rng.pick(&self.sets).clone();
                    let flags = if port && self.rng.pct(80) {
                        "src,dst"
                    } else {
                        "src"
                    };
                    let b = self.rng.bang(25);
                    let rn = if self.rng.pct(20) {
                        " --return-nomatch"
                    } else {
                        ""
                    };
                    s.push(format!("-m set {b}--match-set {name} {flags}{rn}"));
                }
                10 => {
                    let b = self.rng.bang(30);
                    let m = self
                        .rng
                        .pick(&["0x0", "0x1", "0x7/0xff", "0x2/0x2", "0x0/0x1"]);
                    let which = self.rng.pick(&["mark", "connmark"]);
                    s.push(format!("-m {which} {b}--mark {m}"));
                }
                11 => {
                    let (a, len) = self.prefix(if self.v6 { 100 } else { 20 });
                    let span = (1u128 << (self.width() - len)) - 1;
                    let lo = a + (self.rng.next() as u128 % (span + 1)) / 2;
                    let hi = lo + (self.rng.next() as u128 % (span + 1));
                    let hi = hi.min(a + span);
                    let b = self.rng.bang(25);
                    s.push(format!(
                        "-m iprange {b}--src-range {}-{}",
                        addr(lo, self.v6),
                        addr(hi, self.v6)
                    ));
                }
                12 => {
                    let b = self.rng.bang(30);
                    let t = self.rng.pick(&["unicast", "broadcast", "multicast"]);
                    s.push(format!("-m pkttype {b}--pkt-type {t}"));
                }
                13 => {
                    let b = self.rng.bang(40);
                    if self.rng.pct(20) {
                        let server = if self.v6 { SERVER6 } else { SERVER4 };
                        let len = self.width();
                        s.push(format!("{b}-d {server}/{len}"));
                        self.unsupported.push("-d ".into());
                    } else {
                        let mc = if self.v6 {
                            "ff02::fb/128"
                        } else {
                            "224.0.0.0/4"
                        };
                        s.push(format!("{b}-d {mc}"));
                    }
                }
                14 => {
                    if self.v6 {
                        s.push(format!("-m rt {}--rt-type 0", self.rng.bang(40)));
                    } else {
                        s.push(format!("{}-f", self.rng.bang(50)));
                    }
                }
                15 => {
                    if self.rng.pct(50) {
                        s.push("-m comment --comment \"a \\\"quoted\\\" -j DROP\"".into());
                    } else {
                        s.push("-m limit --limit 1000/sec --limit-burst 1000".into());
                        self.unsupported.push("-m limit".into());
                    }
                }
                _ => {}
            }
        }
        s
    }
}

struct Case {
    v4: String,
    v6: String,
    sets: String,
    unsupported: Vec<String>,
}

const TABLES: [&str; 5] = ["raw", "mangle", "nat", "filter", "security"];

fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        _ => &["PREROUTING", "OUTPUT"],
    }
}

fn input_chains(table: &str) -> &'static [&'static str] {
    match table {
        "raw" => &["PREROUTING"],
        "mangle" | "nat" => &["PREROUTING", "INPUT"],
        _ => &["INPUT"],
    }
}

/// One family's restore text.
fn gen_family(g: &mut Gen, sets_text: &mut String) -> String {
    g.ipset(sets_text);
    let mut out = String::new();
    for table in TABLES {
        if table != "filter" && !g.rng.pct(45) {
            continue;
        }
        let users = g.rng.below(4);
        out.push_str(&format!("*{table}\n"));
        for b in builtins(table) {
            let on_path = input_chains(table).contains(b);
            let policy = match table {
                "nat" => "ACCEPT",
                "filter" if on_path && g.rng.pct(50) => "DROP",
                _ if on_path && g.rng.pct(12) => "DROP",
                _ => "ACCEPT",
            };
            out.push_str(&format!(":{b} {policy} [0:0]\n"));
        }
        for u in 0..users {
            out.push_str(&format!(":u{u} - [0:0]\n"));
        }
        // Built-in chains may jump to any user chain, user chain k only to later ones: no loop.
        let chains: Vec<(String, usize, bool)> = input_chains(table)
            .iter()
            .map(|c| (c.to_string(), 0, true))
            .chain((0..users).map(|u| (format!("u{u}"), u + 1, false)))
            .collect();
        for (chain, first_callee, builtin) in chains {
            if table == "filter" && chain == "INPUT" {
                // The lab sees the SYN's fate through connect(): a REJECT of the handshake's
                // last ACK would turn an accepted SYN into an error. Never matches a SYN.
                out.push_str(
                    "-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT\n",
                );
            }
            let n = if builtin {
                g.rng.below(7)
            } else {
                g.rng.below(5)
            };
            for _ in 0..n {
                let mut proto = None;
                let conds = g.conds(&mut proto);
                let target = gen_target(g, table, &chain, builtin, first_callee, users, proto);
                let mut line = format!("-A {chain}");
                for c in conds {
                    line.push(' ');
                    line.push_str(&c);
                }
                if !target.is_empty() {
                    line.push(' ');
                    line.push_str(&target);
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

fn gen_target(
    g: &mut Gen,
    table: &str,
    chain: &str,
    builtin: bool,
    first_callee: usize,
    users: usize,
    proto: Option<&'static str>,
) -> String {
    let callee = |g: &mut Gen| -> Option<String> {
        (first_callee < users)
            .then(|| format!("u{}", first_callee + g.rng.below(users - first_callee)))
    };
    let server = if g.v6 { SERVER6 } else { SERVER4 };
    loop {
        let t = match g.rng.below(16) {
            0..=2 => "-j ACCEPT".to_string(),
            3..=4 if table != "nat" => "-j DROP".to_string(),
            5..=6 if table == "filter" => {
                let with: &[&str] = match (g.v6, proto) {
                    (false, Some("tcp")) => &[
                        "icmp-port-unreachable",
                        "icmp-host-unreachable",
                        "icmp-admin-prohibited",
                        "tcp-reset",
                    ],
                    (false, _) => &[
                        "icmp-port-unreachable",
                        "icmp-host-unreachable",
                        "icmp-admin-prohibited",
                        "icmp-net-unreachable",
                    ],
                    (true, Some("tcp")) => &[
                        "icmp6-port-unreachable",
                        "icmp6-adm-prohibited",
                        "tcp-reset",
                        "icmp6-addr-unreachable",
                    ],
                    (true, _) => &[
                        "icmp6-port-unreachable",
                        "icmp6-adm-prohibited",
                        "icmp6-no-route",
                    ],
                };
                if g.rng.pct(30) {
                    "-j REJECT".to_string()
                } else {
                    format!("-j REJECT --reject-with {}", g.rng.pick(with))
                }
            }
            7 => "-j RETURN".to_string(),
            8..=9 => match callee(g) {
                Some(c) => format!("-j {c}"),
                None => continue,
            },
            10 => match callee(g) {
                Some(c) => format!("-g {c}"),
                None => continue,
            },
            11 => {
                if g.rng.pct(50) {
                    "-j LOG --log-prefix \"eval: \"".to_string()
                } else {
                    String::new()
                }
            }
            12 if table != "nat" => {
                let m = g.rng.pick(&[
                    "--set-xmark 0x1/0xffffffff",
                    "--set-xmark 0x7/0xff",
                    "--set-xmark 0x0/0x1",
                    "--set-xmark 0x2/0x0",
                ]);
                format!("-j MARK {m}")
            }
            13 if table != "nat" => {
                let m = g.rng.pick(&[
                    "--set-xmark 0x1/0xffffffff",
                    "--set-xmark 0x2/0x2",
                    "--save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
                    "--restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
                    "--save-mark --nfmask 0x3 --ctmask 0x1",
                ]);
                format!("-j CONNMARK {m}")
            }
            14 if table == "raw" => "-j CT --notrack".to_string(),
            15 if table == "nat" && builtin && g.rng.pct(40) => {
                if chain == "PREROUTING" {
                    g.unsupported.push("REDIRECT".into());
                    if proto.is_some() {
                        "-j REDIRECT --to-ports 80".to_string()
                    } else {
                        "-j REDIRECT".to_string()
                    }
                } else {
                    format!("-j SNAT --to-source {server}")
                }
            }
            _ => continue,
        };
        return t;
    }
}

fn gen_case(rng: &mut Rng, veth: &str) -> Case {
    let mut sets = String::new();
    let mut unsupported = Vec::new();
    let mut texts = Vec::new();
    for v6 in [false, true] {
        let mut g = Gen {
            rng: &mut *rng,
            v6,
            unsupported: Vec::new(),
            sets: Vec::new(),
            lists: Vec::new(),
            veth: veth.to_string(),
        };
        texts.push(gen_family(&mut g, &mut sets));
        unsupported.append(&mut g.unsupported);
    }
    let v6 = texts.pop().unwrap();
    let v4 = texts.pop().unwrap();
    Case {
        v4,
        v6,
        sets,
        unsupported,
    }
}

// ---------------------------------------------------------------------------------------------
// Loading, reading back, comparing.

fn restore(ns: &NetNs, tool: &str, text: &str) -> Result<(), String> {
    restore_args(ns, tool, &[], text)
}

fn restore_args(ns: &NetNs, tool: &str, args: &[&str], text: &str) -> Result<(), String> {
    match ns.exec_input(tool, args, text) {
        (true, _, _) => Ok(()),
        (false, _, err) => Err(err),
    }
}

fn blank(v6: bool) -> String {
    let mut s = String::new();
    for t in TABLES {
        // ip6tables has no nat INPUT before 3.7 kernels; every kernel here has it.
        let _ = v6;
        s.push_str(&format!("*{t}\n"));
        for b in builtins(t) {
            s.push_str(&format!(":{b} ACCEPT [0:0]\n"));
        }
        s.push_str("COMMIT\n");
    }
    s
}

#[derive(Default, Debug)]
struct Tally {
    rulesets: usize,
    skipped: usize,
    packets: usize,
    accept: usize,
    drop: usize,
    reject: usize,
    unknown: usize,
    /// Refusals whose kind (drop or reject) an earlier unknown chain leaves open.
    refusal_kind_open: usize,
    mismatches: Vec<String>,
    /// One line per disagreement: packet, both verdicts, the deciding rule.
    short: Vec<String>,
}

impl Tally {
    fn check(
        &mut self,
        what: &str,
        packets: &[Packet],
        got: &[String],
        rs: &Ruleset,
        unsupported: &[String],
        context: &dyn Fn() -> String,
    ) {
        for (p, g) in packets.iter().zip(got) {
            self.packets += 1;
            let kernel = kernel_verdict(g);
            let results = rs.evaluate(p);
            let d = combine(&results);
            match &d.verdict {
                Verdict::Unknown(why) => {
                    self.unknown += 1;
                    let explained = unsupported.iter().any(|u| why.contains(u.as_str()))
                        || (!unsupported.is_empty() && why.contains("undecidable"));
                    if !explained {
                        self.mismatches.push(format!(
                            "{what}: {p}: unknown ({why}) though the ruleset uses only modelled \
                             features (unsupported: {unsupported:?}); kernel: {g}\n{results:#?}\n{}",
                            context()
                        ));
                    }
                }
                v => {
                    match v {
                        Verdict::Accept => self.accept += 1,
                        Verdict::Drop => self.drop += 1,
                        _ => self.reject += 1,
                    }
                    // A refusal after an unknown chain: that chain may itself have refused
                    // the other way (a REJECT under `-m limit`, then the policy DROP), so only
                    // "refused" is decided, not which kind.
                    let kind_open = v.is_refusal()
                        && d.by.as_ref().is_some_and(|by| {
                            results.iter().any(|r| {
                                r.priority < by.priority && matches!(r.verdict, Verdict::Unknown(_))
                            })
                        });
                    if kind_open {
                        self.refusal_kind_open += 1;
                    }
                    let agrees = if kind_open {
                        kernel.is_refusal()
                    } else {
                        *v == kernel
                    };
                    if !agrees {
                        self.short.push(format!(
                            "{what}: {p}: {v} vs kernel {g} by {:?}",
                            d.by.as_ref().map(|b| (&b.chain, &b.rule))
                        ));
                        self.mismatches.push(format!(
                            "{what}: {p}: evaluator says {v}, the kernel {g}\n{results:#?}\n{}",
                            context()
                        ));
                    }
                }
            }
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn differential(variant: &str, seed_salt: u64) {
    let started = Instant::now();
    let mut lab = Lab::new(&format!("ev{variant}"));
    let veth = lab
        .server
        .exec_ok("ip", &["-o", "link", "show", "type", "veth"])
        .split(':')
        .nth(1)
        .map(|s| s.trim().split('@').next().unwrap().to_string())
        .expect("the server's veth");
    let cases = env_num("CFA_EVAL_CASES", 70);
    let seed = env_num("CFA_EVAL_SEED", 0x5eed_2026) ^ seed_salt;
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let ns = &lab.server;
    let (v4tool, v6tool) = (
        format!("iptables-{variant}"),
        format!("ip6tables-{variant}"),
    );
    let all = all_packets();
    for i in 0..cases {
        let case = gen_case(&mut rng, &veth);
        let sample: Vec<bool> = all.iter().map(|_| rng.pct(50)).collect();
        if i < env_num("CFA_EVAL_FROM", 0) {
            continue;
        }
        if let Ok(dir) = std::env::var("CFA_EVAL_DUMP") {
            for (ext, text) in [("v4", &case.v4), ("v6", &case.v6), ("sets", &case.sets)] {
                std::fs::write(format!("{dir}/case{i}.{ext}"), text).unwrap();
            }
        }
        // Empty the tables, then the sets, then load the case.
        if variant == "nft" {
            ns.exec_ok("nft", &["flush", "ruleset"]);
        } else {
            restore(ns, &format!("{v4tool}-restore"), &blank(false)).unwrap();
            restore(ns, &format!("{v6tool}-restore"), &blank(true)).unwrap();
        }
        // A list:set holds its members, and nftables releases what a flushed rule held a
        // moment after the flush: empty every set first, then retry for a while.
        ns.exec_ok("ipset", &["flush"]);
        let start = Instant::now();
        while let (false, _, err) = ns.exec("ipset", &["destroy"]) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "ipset destroy: {err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = restore_args(ns, "ipset", &["-exist", "restore"], &case.sets) {
            panic!("case {i}: ipset restore: {e}\n{}", case.sets);
        }
        let loaded = restore(ns, &format!("{v4tool}-restore"), &case.v4)
            .map_err(|e| format!("v4: {e}"))
            .and_then(|_| {
                restore(ns, &format!("{v6tool}-restore"), &case.v6).map_err(|e| format!("v6: {e}"))
            });
        if let Err(e) = loaded {
            // A combination the kernel refuses: the generator's fault, counted and shown.
            eprintln!("case {i} not loadable ({e})");
            tally.skipped += 1;
            continue;
        }
        tally.rulesets += 1;
        let v4save = ns.exec_ok(&format!("{v4tool}-save"), &[]);
        let v6save = ns.exec_ok(&format!("{v6tool}-save"), &[]);
        let setsave = ns.exec_ok("ipset", &["save"]);
        let rs = Ruleset::parse(&format!("iptables-{variant}"), &v4save, &v6save, &setsave)
            .unwrap_or_else(|e| panic!("case {i}: {e}\n{v4save}\n{v6save}\n{setsave}"));
        // Two ports per source, both protocols.
        let packets: Vec<Packet> = all
            .iter()
            .zip(&sample)
            .filter(|(_, s)| **s)
            .map(|(p, _)| *p)
            .collect();
        let mut got = lab.prober.probe(&packets);
        // A timeout where the evaluator expects an answer (accept or reject) may be a loaded
        // machine, not the firewall: ask those again (twice at most). A real drop never answers,
        // so this can only turn a timeout into what the kernel really does.
        for _ in 0..2 {
            let slow: Vec<usize> = (0..packets.len())
                .filter(|&i| {
                    got[i] == "timeout"
                        && matches!(
                            combine(&rs.evaluate(&packets[i])).verdict,
                            Verdict::Accept | Verdict::Reject
                        )
                })
                .collect();
            if slow.is_empty() {
                break;
            }
            let again = lab
                .prober
                .probe(&slow.iter().map(|&i| packets[i]).collect::<Vec<_>>());
            for (k, i) in slow.into_iter().enumerate() {
                got[i] = again[k].clone();
            }
        }
        let context = || {
            format!(
                "--- case {i} (seed {seed:#x}) iptables-save:\n{v4save}--- ip6tables-save:\n{v6save}--- ipset save:\n{setsave}"
            )
        };
        let before = tally.short.len();
        tally.check(
            &format!("{variant} case {i}"),
            &packets,
            &got,
            &rs,
            &case.unsupported,
            &context,
        );
        if tally.short.len() > before {
            // Probe the case once more, to tell a wrong verdict from a flaky lab.
            let again = lab.prober.probe(&packets);
            let changed = got.iter().zip(&again).filter(|(a, b)| a != b).count();
            tally.short.push(format!(
                "  (probed again: {changed} of {} answers changed)",
                packets.len()
            ));
        }
    }
    eprintln!(
        "ipt differential ({variant}, seed {seed:#x}): {} rulesets loaded ({} refused by the kernel), \
         {} packets: {} accept, {} drop, {} reject ({} of these refusals of undecided kind), {} unknown \
         (rulesets with unmodelled matches); {} disagreements; {:.1} s",
        tally.rulesets,
        tally.skipped,
        tally.packets,
        tally.accept,
        tally.drop,
        tally.reject,
        tally.refusal_kind_open,
        tally.unknown,
        tally.mismatches.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.mismatches.is_empty(),
        "{} disagreements with the kernel:\n{}\nthe first:\n{}",
        tally.mismatches.len(),
        tally
            .short
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        tally
            .mismatches
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    assert!(
        tally.rulesets * 10 >= cases as usize * 9,
        "too many cases refused: {tally:?}"
    );
    assert!(
        tally.accept > 0 && tally.drop > 0 && tally.reject > 0,
        "{tally:?}"
    );
}

#[test]
fn differential_iptables_legacy() {
    differential("legacy", 1);
}

#[test]
fn differential_iptables_nft() {
    differential("nft", 2);
}

/// ufw's real chains (iptables-nft, the host's alternative, and iptables-legacy through an
/// `/etc/alternatives` overlay in the namespace): default deny incoming, allows for 22/tcp and
/// for 443 from one network per family, a reject for 8080/tcp and a prepended deny of one
/// address per family. Every answer must be decided and equal the kernel's.
#[test]
fn differential_ufw() {
    for variant in ["nft", "legacy"] {
        let started = Instant::now();
        let mut lab = Lab::new(&format!("evu{variant}"));
        let ns = &lab.server;
        ns.overlay_etc(&["ufw", "default", "alternatives"]);
        let alternatives = ns.etc().join("alternatives");
        for t in ["iptables", "ip6tables"] {
            for suffix in ["", "-restore", "-save"] {
                let link = alternatives.join(format!("{t}{suffix}"));
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(format!("/usr/sbin/{t}-{variant}{suffix}"), &link)
                    .unwrap();
            }
        }
        for args in [
            &["--force", "enable"][..],
            &["allow", "22/tcp"],
            &["allow", "from", "10.1.0.0/16", "to", "any", "port", "443"],
            &[
                "allow",
                "from",
                "2001:db8:1::/48",
                "to",
                "any",
                "port",
                "443",
            ],
            &["reject", "8080/tcp"],
            &["prepend", "deny", "from", "10.1.0.129"],
            &["prepend", "deny", "from", "2001:db8:1::81"],
        ] {
            ns.exec_ok("ufw", args);
        }
        let v4save = ns.exec_ok(&format!("iptables-{variant}-save"), &[]);
        let v6save = ns.exec_ok(&format!("ip6tables-{variant}-save"), &[]);
        assert!(
            v4save.contains("-A ufw-user-input"),
            "ufw wrote no rules with {variant}: {v4save}"
        );
        let rs = Ruleset::parse(&format!("iptables-{variant}"), &v4save, &v6save, "").unwrap();
        let packets = all_packets();
        let got = lab.prober.probe(&packets);
        let mut tally = Tally::default();
        let context = || format!("--- iptables-save:\n{v4save}--- ip6tables-save:\n{v6save}");
        tally.check(
            &format!("ufw {variant}"),
            &packets,
            &got,
            &rs,
            &[],
            &context,
        );
        eprintln!(
            "ipt differential (ufw on iptables-{variant}): {} packets: {} accept, {} drop, {} reject, \
             {} unknown; {} disagreements; {:.1} s",
            tally.packets,
            tally.accept,
            tally.drop,
            tally.reject,
            tally.unknown,
            tally.mismatches.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            tally.mismatches.is_empty(),
            "{}\n{}",
            tally.short.join("\n"),
            tally
                .mismatches
                .iter()
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n\n")
        );
        assert!(
            tally.accept > 0 && tally.drop > 0 && tally.reject > 0,
            "{tally:?}"
        );
    }
}
