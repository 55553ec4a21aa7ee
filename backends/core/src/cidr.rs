//! Strict CIDR parsing.
//!
//! `ipnet` alone accepts `010.1.2.0/24`, which iptables and nft read as octal (8.1.2.0/24), and it
//! silently drops host bits. Every entry that reaches a firewall comes through [`parse_cidr`]
//! instead: the address through the standard library's parser (which rejects leading zeros), a
//! plain decimal prefix, and no host bits.

use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a string is not an acceptable CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not a valid IPv4 or IPv6 address (this includes leading zeros).
    #[error("invalid address in {0:?}")]
    Address(String),
    /// The prefix length is not a plain decimal number in range for the family.
    #[error("invalid prefix length in {0:?}")]
    Prefix(String),
    /// The address has bits set beyond the prefix length.
    #[error("host bits set in {given:?} (the network is {network})")]
    HostBits {
        /// The text as given.
        given: String,
        /// The network the text probably meant.
        network: IpNet,
    },
}

/// Parses one CIDR strictly. A bare address is a host route (`/32` or `/128`).
///
/// The input must already be trimmed; whitespace inside is an error.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| CidrError::Address(text.to_string()))?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match prefix_text {
        None => max,
        Some(p) => parse_prefix(p, max).ok_or_else(|| CidrError::Prefix(text.to_string()))?,
    };
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, prefix).expect("prefix checked")),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, prefix).expect("prefix checked")),
    };
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            given: text.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// A prefix is one to three ASCII digits, no sign, no leading zero (except `0` itself).
fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    let value: u8 = text.parse().ok()?;
    (value <= max).then_some(value)
}

/// Special-purpose IPv4 ranges (IANA registry, RFC 6890 and successors) never accepted from a
/// remote source: a published allowlist containing any of these is wrong or hostile.
const SPECIAL_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.31.196.0/24",
    "192.52.193.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "192.175.48.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Special-purpose IPv6 ranges, likewise.
const SPECIAL_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Returns the special-purpose range `net` overlaps, if any. A network that *contains* a special
/// range overlaps it too, so `0.0.0.0/0` and `::/0` are always refused.
pub fn special_purpose(net: &IpNet) -> Option<IpNet> {
    // Parsed once: parsing the table for every range was most of the cost of validating a list.
    static TABLES: OnceLock<[Vec<IpNet>; 2]> = OnceLock::new();
    let [v4, v6] = TABLES.get_or_init(|| {
        let parse = |table: &[&str]| -> Vec<IpNet> {
            table
                .iter()
                .map(|s| s.parse::<IpNet>().expect("static table is valid"))
                .collect()
        };
        [parse(SPECIAL_V4), parse(SPECIAL_V6)]
    });
    let table = match net {
        IpNet::V4(_) => v4,
        IpNet::V6(_) => v6,
    };
    table
        .iter()
        .find(|special| special.contains(net) || net.contains(*special))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_networks() {
        for s in [
            "173.245.48.0/20",
            "2400:cb00::/32",
            "2a06:98c0::/29",
            "0.0.0.0/0",
            "::/0",
        ] {
            assert_eq!(parse_cidr(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn bare_address_is_a_host_route() {
        assert_eq!(
            parse_cidr("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn rejects_leading_zero_octets() {
        // nft and iptables read 010 as octal 8.
        assert!(matches!(
            parse_cidr("010.1.2.0/24"),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            parse_cidr("10.01.2.0/24"),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn rejects_odd_prefixes() {
        for s in [
            "1.2.3.0/",
            "1.2.3.0/+24",
            "1.2.3.0/024",
            "1.2.3.0/33",
            "1.2.3.0/ 24",
            "::/129",
            "1.2.3.0/2x",
        ] {
            assert!(matches!(parse_cidr(s), Err(CidrError::Prefix(_))), "{s}");
        }
    }

    #[test]
    fn rejects_garbage_addresses() {
        for s in [
            "",
            "/24",
            "1.2.3/24",
            "1.2.3.4.5/32",
            " 1.2.3.0/24",
            "<html>",
            "1.2.3.0/24 ",
        ] {
            assert!(parse_cidr(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn host_bits_are_an_error_naming_the_network() {
        let err = parse_cidr("104.16.0.1/13").unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits {
                given: "104.16.0.1/13".into(),
                network: "104.16.0.0/13".parse().unwrap()
            }
        );
        assert!(err.to_string().contains("104.16.0.0/13"));
        assert!(parse_cidr("2606:4700::1/32").is_err());
    }

    #[test]
    fn special_purpose_ranges_are_found_both_ways() {
        let special = |s: &str| special_purpose(&parse_cidr(s).unwrap()).map(|n| n.to_string());
        assert_eq!(special("0.0.0.0/0").as_deref(), Some("0.0.0.0/8"));
        assert_eq!(special("::/0").as_deref(), Some("::/128"));
        assert_eq!(special("10.1.0.0/16").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(special("127.0.0.1").as_deref(), Some("127.0.0.0/8"));
        assert_eq!(special("fe80::/64").as_deref(), Some("fe80::/10"));
        assert_eq!(special("2001:db8:1::/48").as_deref(), Some("2001:db8::/32"));
        assert_eq!(special("203.0.113.0/24").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(special("173.245.48.0/20"), None);
        assert_eq!(special("2400:cb00::/32"), None);
    }
}
