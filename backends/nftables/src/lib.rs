//! The nftables backend.
//!
//! Two modes:
//!
//! - **Own table** (default): table `inet cf_allowlist` with interval sets `allow_v4` and `allow_v6`
//!   and a base chain `input` accepting the governed ports from the sets; with `restrict` also a drop
//!   for everyone else. An `accept` in one table does not stop another table's base chain from
//!   dropping the packet, and a drop anywhere is final, which is why `restrict` lives here.
//! - **Existing table**: for hosts whose own table drops web traffic, the operator names a table and
//!   chain of theirs; the backend keeps its sets `cf_allowlist_v4`/`cf_allowlist_v6` there and its
//!   rules (tagged with the comment `cf-allowlist`) at the top of that chain, and touches nothing else.
//!
//! The table's structure (sets' types and flags, chains, rules) is read with `nft -j -t list table
//! ...` (terse: without the sets' elements). The elements of our sets are read, changed and read
//! back over netlink from this process ([`netlink`], messages encoded in [`wire`]): one nfnetlink
//! batch per change, which the kernel applies as one transaction, as it does `nft -f`; a dry run
//! sends the same batch without its end, so the kernel checks it and throws it away. Rebuilding a
//! wrong structure (rare) is one `nft -f` transaction with the elements inside; its dry run is
//! `nft -c`. A first sync of our own table (none there) goes in stages, none of which lets anyone
//! in or keeps anyone out that no table would not: `nft -f` of the table with empty sets and the
//! accept rules, the elements over netlink, then `nft -f` appending the restrict rules; a failure
//! after the first stage deletes the table again. Why not `nft` for the elements too: nft lists a 60,000-element set in 0.6 s
//! and ~95 MB, and re-reads the whole set to add one element.

mod names;
#[doc(hidden)]
pub mod netlink;
mod parse;
mod script;
mod structure;
#[doc(hidden)]
pub mod wire;

use cfa_core::{Backend, BackendError, Family, Live, Plan, RuleSpec, Runner};

use crate::netlink::Nfnl;
use crate::wire::SetChange;

pub use names::{
    is_keyword, validate_family, validate_name, validate_options, FAMILIES, KEYWORDS, MAX_NAME_LEN,
};
pub use parse::{parse_table, NftChain, NftRule, NftSet, NftTable};

/// Our own table's name. Part of the compatibility contract: renaming it orphans old rules.
pub const TABLE: &str = "cf_allowlist";
/// Our own table's family.
pub const TABLE_FAMILY: &str = "inet";
/// The base chain in our own table.
pub const CHAIN: &str = "input";
/// Set names in our own table (compatibility contract).
pub const OWN_SETS: [&str; 2] = ["allow_v4", "allow_v6"];
/// Set names when living in an operator's table: prefixed, so they cannot collide with theirs.
pub const SHARED_SETS: [&str; 2] = ["cf_allowlist_v4", "cf_allowlist_v6"];
/// Priority of our base chain: just before the standard `filter` priority.
pub const CHAIN_PRIORITY: i64 = -10;

/// Settings from the configuration's `nftables:` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftOptions {
    /// Table family: `inet` (default), `ip` or `ip6` (see [`FAMILIES`]).
    pub family: String,
    /// Table name; `cf_allowlist` (our own) by default. Checked by [`validate_name`].
    pub table: String,
    /// With a chain name: the "existing table" mode, keeping our sets and rules inside the operator's
    /// table and chain (not with our own table's name). Without: our own table.
    pub chain: Option<String>,
}

impl Default for NftOptions {
    fn default() -> Self {
        NftOptions {
            family: TABLE_FAMILY.to_string(),
            table: TABLE.to_string(),
            chain: None,
        }
    }
}

/// Where our objects live and what they are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// `true`: our own table, created and deleted whole. `false`: an operator's table.
    pub owned: bool,
    /// Families managed: the spec's, limited to what the table family can hold.
    pub families: Vec<Family>,
    pub spec: RuleSpec,
}

impl Layout {
    pub fn set_name(&self, family: Family) -> &'static str {
        let names = if self.owned { OWN_SETS } else { SHARED_SETS };
        match family {
            Family::V4 => names[0],
            Family::V6 => names[1],
        }
    }

    /// `inet cf_allowlist`
    pub fn table_ref(&self) -> String {
        format!("{} {}", self.family, self.table)
    }
}

/// The nftables backend.
#[derive(Debug, Clone)]
pub struct NftablesBackend {
    layout: Layout,
    runner: Runner,
    dropped_families: Vec<Family>,
}

impl NftablesBackend {
    /// A backend for `options`, managing rules shaped by `spec`, running `nft` through `runner`.
    ///
    /// `options` is checked with [`validate_options`] first (the configuration check does the same):
    /// the names are written into `nft` scripts, so nothing else may reach them.
    pub fn new(options: NftOptions, spec: RuleSpec, runner: Runner) -> Result<Self, BackendError> {
        validate_options(&options).map_err(BackendError::Conflict)?;
        let supported: &[Family] = match options.family.as_str() {
            "inet" => &Family::ALL,
            "ip" => &[Family::V4],
            "ip6" => &[Family::V6],
            other => {
                return Err(BackendError::Conflict(format!(
                    "nftables family {other:?} cannot hold an input filter for addresses (use inet, ip or ip6)"
                )))
            }
        };
        let owned = options.chain.is_none();
        let families: Vec<Family> = spec
            .families
            .iter()
            .copied()
            .filter(|f| supported.contains(f))
            .collect();
        let dropped_families = spec
            .families
            .iter()
            .copied()
            .filter(|f| !supported.contains(f))
            .collect::<Vec<Family>>();
        // An `ip` table with only IPv6 managed (or `ip6` with only IPv4) would govern nothing while
        // sync reported success: refuse it instead.
        if families.is_empty() && !dropped_families.is_empty() {
            let wanted: Vec<&str> = dropped_families.iter().map(|f| f.name()).collect();
            return Err(BackendError::Conflict(format!(
                "nftables.family: an {} table cannot hold {}, and no other family is managed \
                 (families: {wanted:?}); use an inet table, or change families",
                options.family,
                wanted.join(" and ")
            )));
        }
        Ok(NftablesBackend {
            layout: Layout {
                family: options.family,
                table: options.table,
                chain: options.chain.unwrap_or_else(|| CHAIN.to_string()),
                owned,
                families,
                spec,
            },
            runner,
            dropped_families,
        })
    }

    /// Reads our table (own mode) or the operator's table; `None` when it does not exist.
    fn list_table(&self) -> Result<Option<NftTable>, BackendError> {
        let args = [
            "-j",
            "-t",
            "list",
            "table",
            &self.layout.family,
            &self.layout.table,
        ];
        match self.runner.run("nft", &args, None) {
            Ok(out) => parse_table(&out.stdout, &self.layout.table).map(Some),
            Err(e)
                if e.stderr()
                    .is_some_and(|s| s.contains("No such file or directory")) =>
            {
                Ok(None)
            }
            Err(e) => Err(BackendError::command(
                format!("reading nftables table {}", self.layout.table_ref()),
                e,
            )),
        }
    }

    fn run_script(&self, script: &str, check_only: bool) -> Result<(), BackendError> {
        let args: &[&str] = if check_only {
            &["-c", "-f", "-"]
        } else {
            &["-f", "-"]
        };
        tracing::debug!(script, check_only, "nft transaction");
        self.runner
            .run("nft", args, Some(script))
            .map(|_| ())
            .map_err(|e| {
                let action = if check_only {
                    format!(
                        "checking the nftables transaction for {}",
                        self.layout.table_ref()
                    )
                } else {
                    format!(
                        "applying the nftables transaction to {}",
                        self.layout.table_ref()
                    )
                };
                BackendError::command(action, e)
            })
    }

    /// The netlink socket for our sets' elements, in the namespace the runner's tools run in.
    fn netlink(&self) -> Result<Nfnl, BackendError> {
        Nfnl::open(self.runner.netns())
            .map_err(|e| BackendError::kernel("talking to nf_tables over netlink", e))
    }

    /// The table's family as nf_tables numbers it (checked by [`validate_options`] already).
    fn family_number(&self) -> Result<u8, BackendError> {
        wire::table_family(&self.layout.family).ok_or_else(|| {
            BackendError::Conflict(format!(
                "nftables family {:?} cannot hold an input filter for addresses (use inet, ip or ip6)",
                self.layout.family
            ))
        })
    }

    /// Fills the elements of our sets in `table` (listed without them) from the kernel. A set
    /// that vanished since the listing is dropped from `table`, so it reads as missing.
    fn fill_elements(
        &self,
        nl: &mut Option<Nfnl>,
        table: &mut NftTable,
    ) -> Result<(), BackendError> {
        let family = self.family_number()?;
        for key in Family::ALL {
            let name = self.layout.set_name(key);
            let Some(set) = table.sets.get_mut(name) else {
                continue;
            };
            let nl = match nl {
                Some(nl) => nl,
                None => nl.insert(self.netlink()?),
            };
            match nl.get_set(family, &self.layout.table, name, key) {
                Ok(Some(contents)) => {
                    set.nets = contents.nets;
                    set.other = contents.other;
                }
                Ok(None) => {
                    table.sets.remove(name);
                }
                Err(e) => {
                    return Err(BackendError::kernel(
                        format!(
                            "reading the elements of nftables set {} {name}",
                            self.layout.table_ref()
                        ),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// The element changes of `plan` (no rebuild), one per managed family that changes.
    fn changes(&self, plan: &Plan) -> Result<Vec<SetChange>, BackendError> {
        let family = self.family_number()?;
        Ok(self
            .layout
            .families
            .iter()
            .filter(|f| plan.add.len_of(**f) + plan.remove.len_of(**f) > 0)
            .map(|&key| SetChange {
                family,
                table: self.layout.table.clone(),
                set: self.layout.set_name(key).to_string(),
                key,
                flush: false,
                remove: plan.remove.iter_family(key).collect(),
                add: plan.add.iter_family(key).collect(),
            })
            .collect())
    }

    /// Checks (`check_only`) or applies `plan`: element changes over netlink, a rebuild with nft.
    fn send(&self, plan: &Plan, check_only: bool) -> Result<(), BackendError> {
        if plan.rebuild.is_some() {
            // What the rebuild script needs of the live table: our tagged rules' handles and
            // stale sets (not their elements: the script flushes or replaces them).
            let mut nl = None;
            let live = self.quick_table(&mut nl)?;
            if live.is_none() && self.layout.owned && !check_only {
                return self.first_sync(plan);
            }
            return self.run_script(
                &script::rebuild_script(&self.layout, &plan.after, &live.unwrap_or_default()),
                check_only,
            );
        }
        self.commit(&self.changes(plan)?, plan, check_only)
    }

    /// Our own table where there is none, in the stages of [`script::staged_table_script`]: no
    /// stage lets anyone in or keeps anyone out that having no table would not, so only the end
    /// state counts; a failure in a later stage deletes the table again.
    fn first_sync(&self, plan: &Plan) -> Result<(), BackendError> {
        self.run_script(&script::staged_table_script(&self.layout), false)?;
        let rest = || -> Result<(), BackendError> {
            let all = Plan {
                add: plan.after.clone(),
                remove: cfa_core::AllowList::new(),
                ..plan.clone()
            };
            self.commit(&self.changes(&all)?, &all, false)?;
            if let Some(drops) = script::drop_rules_script(&self.layout) {
                self.run_script(&drops, false)?;
            }
            Ok(())
        };
        rest().map_err(|cause| {
            let undo = format!("delete table {}\n", self.layout.table_ref());
            match self.run_script(&undo, false) {
                Ok(()) => cause,
                Err(undo) => BackendError::undo_failed(cause, undo),
            }
        })
    }

    /// Sends the element changes `changes` (of `plan`) in one batch.
    fn commit(
        &self,
        changes: &[SetChange],
        plan: &Plan,
        check_only: bool,
    ) -> Result<(), BackendError> {
        if changes.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            sets = changes.len(),
            add = plan.add.len(),
            remove = plan.remove.len(),
            check_only,
            "nftables element batch over netlink"
        );
        self.netlink()?.commit(changes, check_only).map_err(|e| {
            let action = if check_only {
                format!(
                    "checking the element changes to {}",
                    self.layout.table_ref()
                )
            } else {
                format!(
                    "applying the element changes to {}",
                    self.layout.table_ref()
                )
            };
            BackendError::kernel(action, e)
        })
    }

    /// The structure read over netlink ([`structure`]) when it is exactly what we write, else
    /// with `nft -j` (the authority); `nl` is left open for the elements.
    fn quick_table(&self, nl: &mut Option<Nfnl>) -> Result<Option<NftTable>, BackendError> {
        let quick = match nl {
            Some(nl) => structure::read(nl, &self.layout),
            None => match self.netlink() {
                Ok(opened) => structure::read(nl.insert(opened), &self.layout),
                Err(e) => {
                    tracing::debug!(error = %e, "no netlink socket for the structure; asking nft");
                    return self.live_table();
                }
            },
        };
        match quick {
            Ok(structure::Quick::Table(t)) => Ok(Some(t)),
            Ok(structure::Quick::Absent) => self.table_or_absent(None),
            Ok(structure::Quick::Unsure(why)) => {
                tracing::debug!(reason = %why, "structure not confirmed over netlink; asking nft");
                self.live_table()
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the structure over netlink failed; asking nft");
                self.live_table()
            }
        }
    }

    /// The table to work on: ours may be absent (an empty table then); an operator's must exist.
    fn live_table(&self) -> Result<Option<NftTable>, BackendError> {
        self.table_or_absent(self.list_table()?)
    }

    fn table_or_absent(&self, table: Option<NftTable>) -> Result<Option<NftTable>, BackendError> {
        match table {
            Some(t) => Ok(Some(t)),
            None if self.layout.owned => Ok(None),
            None => Err(BackendError::Conflict(format!(
                "nftables table {} does not exist; create it (with chain {}) or drop nftables.chain to use our own table",
                self.layout.table_ref(),
                self.layout.chain
            ))),
        }
    }
}

/// The two ways of reading, side by side, for tests that compare them.
#[doc(hidden)]
impl NftablesBackend {
    /// [`Backend::read`] through the netlink fast path alone: `Err(why)` inside when it cannot
    /// confirm the structure (where `read` would ask `nft -j`).
    pub fn read_fast(&self) -> Result<Result<Live, String>, BackendError> {
        let mut socket = self.netlink()?;
        let quick = structure::read(&mut socket, &self.layout)
            .map_err(|e| BackendError::kernel("reading the structure over netlink", e))?;
        let mut nl = Some(socket);
        let table = match quick {
            structure::Quick::Table(t) => Some(t),
            structure::Quick::Absent => self.table_or_absent(None)?,
            structure::Quick::Unsure(why) => return Ok(Err(why)),
        };
        Ok(Ok(self.judge(&mut nl, table)?))
    }

    /// [`Backend::read`] with the structure from `nft -j` (the fallback), never the fast path.
    pub fn read_with_nft(&self) -> Result<Live, BackendError> {
        let table = self.live_table()?;
        self.judge(&mut None, table)
    }
}

impl Backend for NftablesBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn families(&self) -> Result<Vec<Family>, BackendError> {
        Ok(self.layout.families.clone())
    }

    fn read(&self) -> Result<Live, BackendError> {
        let mut nl = None;
        let table = self.quick_table(&mut nl)?;
        self.judge(&mut nl, table)
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        self.send(plan, true)
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        self.send(plan, false)
    }

    fn purge(&self) -> Result<(), BackendError> {
        let Some(table) = self.list_table()? else {
            return Ok(());
        };
        if let Some(script) = script::purge_script(&self.layout, &table) {
            self.run_script(&script, false)?;
        }
        Ok(())
    }
}

impl NftablesBackend {
    /// The live state from `table` (its structure, without elements): fills in the elements of
    /// our sets over `nl` and judges it.
    fn judge(&self, nl: &mut Option<Nfnl>, table: Option<NftTable>) -> Result<Live, BackendError> {
        let Some(mut table) = table else {
            return Ok(Live::absent());
        };
        self.fill_elements(nl, &mut table)?;
        let mut live = script::inspect(&self.layout, &table);
        for f in &self.dropped_families {
            live.warnings.push(format!(
                "{f} ranges are not managed: nftables table family {} cannot hold them",
                self.layout.family
            ));
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_table_cannot_be_renamed_without_a_chain() {
        let opts = NftOptions {
            table: "filter".into(),
            ..NftOptions::default()
        };
        let err = NftablesBackend::new(opts, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(err.to_string().contains("nftables.chain"), "{err}");
    }

    #[test]
    fn ip_table_manages_only_ipv4() {
        let opts = NftOptions {
            family: "ip".into(),
            table: "filter".into(),
            chain: Some("INPUT".into()),
        };
        let b = NftablesBackend::new(opts, RuleSpec::default(), Runner::new()).unwrap();
        assert_eq!(b.layout.families, vec![Family::V4]);
        assert_eq!(b.dropped_families, vec![Family::V6]);
    }

    #[test]
    fn new_refuses_names_that_could_break_the_script() {
        let opts = NftOptions {
            family: "inet".into(),
            table: "opfilter".into(),
            chain: Some(
                "input meta mark 7 drop; delete table inet victim; insert rule inet opfilter input"
                    .into(),
            ),
        };
        let err = NftablesBackend::new(opts, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(matches!(err, BackendError::Conflict(_)));
        assert!(err.to_string().starts_with("nftables.chain: "), "{err}");
        let opts = NftOptions {
            family: "inet; flush ruleset".into(),
            table: "filter".into(),
            chain: Some("input".into()),
        };
        let err = NftablesBackend::new(opts, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(err.to_string().starts_with("nftables.family: "), "{err}");
    }

    #[test]
    fn spec_families_are_honoured() {
        let backend = |family: &str, families: Vec<Family>| {
            let opts = NftOptions {
                family: family.into(),
                table: "filter".into(),
                chain: Some("input".into()),
            };
            let spec = RuleSpec {
                families,
                ..RuleSpec::default()
            };
            NftablesBackend::new(opts, spec, Runner::new())
        };
        let b = backend("inet", vec![Family::V6]).unwrap();
        assert_eq!(b.families().unwrap(), vec![Family::V6]);
        assert!(b.dropped_families.is_empty());
        let b = backend("ip6", Family::ALL.to_vec()).unwrap();
        assert_eq!(b.families().unwrap(), vec![Family::V6]);
        assert_eq!(b.dropped_families, vec![Family::V4]);
        let err = backend("ip", vec![Family::V6]).unwrap_err().to_string();
        assert!(
            err.contains("an ip table cannot hold ipv6, and no other family is managed"),
            "{err}"
        );
        let own = NftablesBackend::new(
            NftOptions::default(),
            RuleSpec {
                families: vec![Family::V4],
                ..RuleSpec::default()
            },
            Runner::new(),
        )
        .unwrap();
        assert_eq!(own.families().unwrap(), vec![Family::V4]);
    }

    #[test]
    fn bridge_family_is_refused() {
        let opts = NftOptions {
            family: "bridge".into(),
            table: "t".into(),
            chain: Some("c".into()),
        };
        let err = NftablesBackend::new(opts, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(err.to_string().starts_with("nftables.family: "), "{err}");
    }
}
