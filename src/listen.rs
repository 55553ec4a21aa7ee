//! Who listens on a port: `/proc/net/{tcp,tcp6,udp,udp6}` of the network namespace this process
//! runs in, and the process owning each socket where `/proc` lets us see it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cfa_eval::L4;

/// One listening (TCP) or unconnected (UDP) socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// TCP or UDP.
    pub proto: L4,
    /// The local address it is bound to (`0.0.0.0` / `::` for every address).
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode, to find its process.
    pub inode: u64,
}

impl Socket {
    /// Bound to loopback only (`127.0.0.0/8`, `::1`, `::ffff:127.x`): unreachable from outside.
    pub fn loopback_only(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }
}

/// TCP `LISTEN` and UDP `CLOSE` (unconnected, i.e. bound and receiving) in `/proc/net/*`.
const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/tcp`-style table (`v6`: the `tcp6`/`udp6` layout). Lines that do not
/// parse are skipped: the kernel's format is fixed, and a partial answer beats none.
pub fn parse_table(text: &str, proto: L4, v6: bool) -> Vec<Socket> {
    let want = match proto {
        L4::Tcp => TCP_LISTEN,
        L4::Udp => UDP_UNCONNECTED,
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != want {
                return None;
            }
            let (addr, port) = fields[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let addr = if v6 {
                IpAddr::V6(parse_v6(addr)?)
            } else {
                IpAddr::V4(parse_v4(addr)?)
            };
            let inode = fields[9].parse().ok()?;
            Some(Socket {
                proto,
                addr,
                port,
                inode,
            })
        })
        .collect()
}

/// `/proc/net/tcp` prints an IPv4 address as its four bytes read as one host-order word: on a
/// little-endian host `0100007F` is 127.0.0.1.
fn parse_v4(hex: &str) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// `/proc/net/tcp6` prints an IPv6 address as four 32-bit words, each in host byte order.
fn parse_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// Every listening socket of this network namespace for `proto`, both families.
pub fn sockets(proto: L4) -> Vec<Socket> {
    let (v4, v6) = match proto {
        L4::Tcp => ("/proc/net/tcp", "/proc/net/tcp6"),
        L4::Udp => ("/proc/net/udp", "/proc/net/udp6"),
    };
    let mut out = Vec::new();
    for (path, is_v6) in [(v4, false), (v6, true)] {
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(parse_table(&text, proto, is_v6));
        }
    }
    out
}

/// Socket inode -> `name[pid]` of a process holding it, from `/proc/*/fd`. Processes we may not
/// look into are skipped.
pub fn owners() -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                out.entry(inode).or_insert_with(|| format!("{comm}[{pid}]"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a namespace with `nc -l 127.0.0.1 443`, a listener on 0.0.0.0:80, an
    // established connection and `::1` / `::` listeners.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0050 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 31339 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41337 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41338 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_and_their_addresses() {
        let v4 = parse_table(TCP, L4::Tcp, false);
        assert_eq!(v4.len(), 2, "the established connection is not a listener");
        assert_eq!(v4[0].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v4[0].port, 443);
        assert!(v4[0].loopback_only());
        assert_eq!(v4[1].addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(v4[1].port, 80);
        assert!(!v4[1].loopback_only());
        let v6 = parse_table(TCP6, L4::Tcp, true);
        assert_eq!(v6[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert!(v6[0].loopback_only());
        assert_eq!(v6[1].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(v6[1].inode, 41338);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        assert!(parse_table("", L4::Tcp, false).is_empty());
        assert!(parse_table("header\n0: zz:zz zz 0A\n\u{feff}ü", L4::Tcp, true).is_empty());
    }

    #[test]
    fn this_process_can_see_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = sockets(L4::Tcp);
        let s = found.iter().find(|s| s.port == port).expect("listed");
        assert!(s.loopback_only());
        let owners = owners();
        assert!(
            owners.get(&s.inode).is_some_and(|o| o.contains('[')),
            "{owners:?}"
        );
    }
}
