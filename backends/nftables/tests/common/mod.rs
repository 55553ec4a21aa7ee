//! Helpers shared by the kernel tests of this crate.

use cfa_core::{AllowList, Backend, Plan, Structure};
use cfa_nftables::NftablesBackend;

/// The networks written in `items`.
pub fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

/// One engine round against the kernel: read, plan, check, apply, and the read back must be the
/// list, current. `None` when there was nothing to do.
pub fn sync(backend: &NftablesBackend, desired: &AllowList) -> Option<Plan> {
    let live = backend.read().unwrap();
    let plan = Plan::new(&live, desired)?;
    backend.check(&plan).unwrap();
    backend.apply(&plan).unwrap();
    let after = backend.read().unwrap();
    assert_eq!(after.structure, Structure::Current, "after applying {plan}");
    assert_eq!(&after.entries, desired);
    Some(plan)
}
