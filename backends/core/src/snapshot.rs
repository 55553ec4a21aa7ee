//! The embedded snapshot of Cloudflare's published ranges: the engine's last resort when the
//! network and the cache both fail (add-only, like any degraded list), and the list every test
//! means by "Cloudflare's 22 ranges".

use crate::cidr::parse_cidr;
use crate::model::AllowList;

/// When the snapshot was taken from Cloudflare's published lists.
pub const SNAPSHOT_DATE: &str = "2026-09-30";

const V4: &str = include_str!("../snapshot/ips-v4");
const V6: &str = include_str!("../snapshot/ips-v6");

/// The snapshot's ranges (15 IPv4, 7 IPv6 today).
pub fn cloudflare() -> AllowList {
    V4.lines()
        .chain(V6.lines())
        .map(|l| parse_cidr(l.trim()).expect("embedded snapshot is valid"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_has_the_published_22_ranges() {
        let l = super::cloudflare();
        assert_eq!((l.v4.len(), l.v6.len()), (15, 7));
    }
}
