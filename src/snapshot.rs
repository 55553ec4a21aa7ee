//! The embedded snapshot of Cloudflare's ranges: the last resort when the network and the cache
//! both fail. Add-only, like any degraded list.

use cfa_core::{parse_cidr, AllowList};

/// When the snapshot was taken from Cloudflare's published lists.
pub const SNAPSHOT_DATE: &str = "2026-09-30";

const V4: &str = include_str!("../tests/fixtures/cloudflare/ips-v4");
const V6: &str = include_str!("../tests/fixtures/cloudflare/ips-v6");

/// The snapshot's ranges.
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
