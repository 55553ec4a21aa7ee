//! Real TCP connections across namespaces, to prove a rule drops or accepts packets.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::NetNs;

/// A TCP listener on `ports` (both families) inside a namespace, killed on drop.
pub struct Listener(Child);

impl Listener {
    pub fn start(ns: &NetNs, ports: &[u16]) -> Listener {
        let code = "import socket, sys, threading\n\
            def serve(port):\n    s = socket.create_server(('::', port), family=socket.AF_INET6, dualstack_ipv6=True)\n    \
            while True:\n        c, _ = s.accept()\n        c.close()\n\
            for p in sys.argv[1:]:\n    threading.Thread(target=serve, args=(int(p),)).start()\n";
        let mut cmd = ns.command("python3");
        cmd.args(["-c", code])
            .args(ports.iter().map(u16::to_string));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 listener");
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real TCP connection from `src` to `dst`:`port` inside `ns`: "ok", "timeout" or "error ...".
pub fn connect(ns: &NetNs, src: &str, dst: &str, port: u16) -> String {
    let code = "import socket, sys\n\
        src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
        s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_STREAM)\n\
        s.settimeout(1.0)\n\
        s.bind((src, 0))\n\
        try:\n    s.connect((dst, port)); print('ok')\n\
        except socket.timeout:\n    print('timeout')\n\
        except OSError as e:\n    print('error', e)\n";
    let (_, out, err) = ns.exec("python3", &["-c", code, src, dst, &port.to_string()]);
    format!("{}{}", out.trim(), err.trim())
}

/// Waits until `src` can connect to `dst`:`port` (the listener is up), at most 5 s.
pub fn wait_until_ok(ns: &NetNs, src: &str, dst: &str, port: u16) {
    let start = Instant::now();
    while connect(ns, src, dst, port) != "ok" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{dst}:{port} never answered {src}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client and a server namespace on one link, with a listener on the server: the lab for
/// "does the firewall really drop strangers" tests. The client has one source address inside
/// [`Lab::ALLOWED_NETS`] and one outside, per family.
pub struct Lab {
    _listener: Listener,
}

impl Lab {
    /// The networks a test puts on the allowlist.
    pub const ALLOWED_NETS: [&'static str; 2] = ["198.51.100.0/24", "2001:db8:1::/64"];
    /// (client source, server address) pairs inside the allowlist: IPv4, IPv6.
    pub const ALLOWED: [(&'static str, &'static str); 2] = [
        ("198.51.100.2", "198.51.100.1"),
        ("2001:db8:1::2", "2001:db8:1::1"),
    ];
    /// (client source, server address) pairs outside it: IPv4, IPv6.
    pub const STRANGERS: [(&'static str, &'static str); 2] = [
        ("203.0.113.2", "203.0.113.1"),
        ("2001:db8:2::2", "2001:db8:2::1"),
    ];

    /// Links `server` and `client`, listens on `ports` in `server`, and waits until every
    /// client address connects to `ports[0]` (so a drop seen later is the firewall's).
    pub fn new(server: &NetNs, client: &NetNs, ports: &[u16]) -> Lab {
        let (here, there): (Vec<String>, Vec<String>) = Self::ALLOWED
            .iter()
            .chain(&Self::STRANGERS)
            .map(|(src, dst)| {
                let len = if dst.contains(':') { 64 } else { 24 };
                (format!("{dst}/{len}"), format!("{src}/{len}"))
            })
            .unzip();
        let here: Vec<&str> = here.iter().map(String::as_str).collect();
        let there: Vec<&str> = there.iter().map(String::as_str).collect();
        server.link(client, &here, &there);
        let listener = Listener::start(server, ports);
        for (src, dst) in Self::ALLOWED.iter().chain(&Self::STRANGERS) {
            wait_until_ok(client, src, dst, ports[0]);
        }
        Lab {
            _listener: listener,
        }
    }
}
