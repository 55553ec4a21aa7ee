//! Planning: the pure step between what the sources want and what the firewall holds.
//!
//! desired list + live state + degraded + families in; the target, a plan and the guards'
//! verdict out. No I/O, so every guard is unit-tested without a kernel.

use cfa_core::{AllowList, Family, Live, Plan, Structure};

/// What planning needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The union of every source, aggregated.
    pub desired: &'a AllowList,
    /// What the backend found.
    pub live: &'a Live,
    /// A source served a fallback (cache, snapshot, nothing): the plan must be add-only.
    pub degraded: bool,
    /// The families managed: the configured ones the backend can hold.
    pub families: &'a [Family],
    /// `guards.max_removal`: the largest share of one family's entries a plan may remove.
    pub max_removal: f64,
    /// `--force`: apply a plan above `max_removal` (with a warning).
    pub force: bool,
}

/// A plan the guards let through.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// What the firewall should hold.
    pub target: AllowList,
    /// The change; `None` when the firewall already holds `target`.
    pub plan: Option<Plan>,
    /// What the operator should know (a guard overridden by `--force`).
    pub warnings: Vec<String>,
}

/// Why a plan was refused: nothing is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The target is empty.
    #[error("the desired allowlist is empty; refusing to apply it")]
    Empty,
    /// A family would lose more than `max_removal` of its entries.
    #[error(
        "the plan removes {removing} of {before} {family} entries ({share:.0}%), more than guards.max_removal ({max:.0}%); nothing changed. Check the source, or run again with --force"
    )]
    Shrink {
        /// The family.
        family: Family,
        /// Its entries live now.
        before: usize,
        /// How many the plan removes.
        removing: usize,
        /// `removing / before`, in percent.
        share: f64,
        /// `max_removal`, in percent.
        max: f64,
    },
}

/// The target for `inputs` and the plan that reaches it, or why it is refused.
///
/// - Only the managed families are wanted.
/// - Degraded: coverage never shrinks. The target is the union of the live entries and the
///   fallback list, aggregated, so an entry is only ever replaced by a wider one covering it.
/// - An empty target is refused.
/// - `max_removal` is judged per family: an answer with IPv4 intact and one IPv6 range left must
///   not pass because the IPv4 entries dilute the share.
pub fn plan(inputs: Inputs<'_>) -> Result<Planned, Refused> {
    let wanted = inputs.desired.only(inputs.families);
    let target = if inputs.degraded {
        wanted.union(&inputs.live.entries).aggregate()
    } else {
        wanted
    };
    if target.is_empty() {
        return Err(Refused::Empty);
    }
    let plan = Plan::new(inputs.live, &target);
    let mut warnings = Vec::new();
    if let Some(plan) = &plan {
        for family in Family::ALL {
            let before = plan.before.len_of(family);
            let removing = plan.remove.len_of(family);
            if before == 0 || removing == 0 {
                continue;
            }
            let share = removing as f64 / before as f64;
            if share <= inputs.max_removal {
                continue;
            }
            let refused = Refused::Shrink {
                family,
                before,
                removing,
                share: share * 100.0,
                max: inputs.max_removal * 100.0,
            };
            if inputs.force {
                warnings.push(format!("--force: applying it anyway: {refused}"));
            } else {
                return Err(refused);
            }
        }
    }
    Ok(Planned {
        target,
        plan,
        warnings,
    })
}

/// Compares what the backend reads after apply with the plan; the problems, if any.
pub fn verify(plan: &Plan, after: &Live) -> Result<(), String> {
    let mut problems = Vec::new();
    if after.structure != Structure::Current {
        problems.push(format!("objects not as written: {:?}", after.structure));
    }
    let missing = plan.after.difference(&after.entries);
    let extra = after.entries.difference(&plan.after);
    if !missing.is_empty() {
        problems.push(format!("missing {}", joined(&missing)));
    }
    if !extra.is_empty() {
        problems.push(format!("unexpected {}", joined(&extra)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn joined(list: &AllowList) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::snapshot;
    use ipnet::IpNet;

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse::<IpNet>().unwrap()).collect()
    }

    fn live(entries: AllowList) -> Live {
        Live {
            entries,
            structure: Structure::Current,
            warnings: vec![],
        }
    }

    fn inputs<'a>(desired: &'a AllowList, live: &'a Live) -> Inputs<'a> {
        Inputs {
            desired,
            live,
            degraded: false,
            families: &Family::ALL,
            max_removal: 0.5,
            force: false,
        }
    }

    #[test]
    fn identical_lists_plan_nothing() {
        let cf = snapshot::cloudflare();
        let l = live(cf.clone());
        let p = plan(inputs(&cf, &l)).unwrap();
        assert_eq!(p.plan, None);
        assert_eq!(p.target, cf);
    }

    #[test]
    fn shrink_is_judged_per_family() {
        // IPv4 intact, IPv6 down from 7 ranges to 1: 6 of 22 overall (27%) would pass a
        // whole-list guard at 50%; per family it is 6 of 7 (86%).
        let cf = snapshot::cloudflare();
        let mut answer = cf.clone();
        let keep = *answer.v6.iter().next().unwrap();
        answer.v6.retain(|n| *n == keep);
        let l = live(cf.clone());
        let err = plan(inputs(&answer, &l)).unwrap_err();
        assert!(
            matches!(
                err,
                Refused::Shrink {
                    family: Family::V6,
                    before: 7,
                    removing: 6,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("6 of 7 ipv6 entries"), "{err}");
        let forced = plan(Inputs {
            force: true,
            ..inputs(&answer, &l)
        })
        .unwrap();
        assert_eq!(forced.plan.unwrap().remove.len_of(Family::V6), 6);
        assert!(forced.warnings[0].contains("--force"));
    }

    #[test]
    fn shrink_at_exactly_the_limit_passes() {
        let before = list(&["1.0.0.0/24", "2.0.0.0/24", "3.0.0.0/24", "4.0.0.0/24"]);
        let after = list(&["1.0.0.0/24", "2.0.0.0/24"]);
        let l = live(before);
        assert!(plan(inputs(&after, &l)).unwrap().plan.is_some());
    }

    #[test]
    fn degraded_never_removes_coverage() {
        let l = live(list(&[
            "104.16.0.0/13",
            "198.41.128.0/17",
            "2400:cb00::/32",
        ]));
        let fallback = list(&["104.16.0.0/12", "173.245.48.0/20"]);
        let p = plan(Inputs {
            degraded: true,
            ..inputs(&fallback, &l)
        })
        .unwrap();
        // 104.16.0.0/13 is replaced by the wider /12 that covers it; nothing else goes.
        assert_eq!(
            p.target,
            list(&[
                "104.16.0.0/12",
                "173.245.48.0/20",
                "198.41.128.0/17",
                "2400:cb00::/32"
            ])
        );
        let plan = p.plan.unwrap();
        for net in plan.remove.iter() {
            assert!(p.target.iter().any(|t| t.contains(&net)), "{net} uncovered");
        }
    }

    #[test]
    fn only_the_managed_families_are_wanted() {
        let cf = snapshot::cloudflare();
        let l = Live::absent();
        let p = plan(Inputs {
            families: &[Family::V4],
            ..inputs(&cf, &l)
        })
        .unwrap();
        assert_eq!(p.target.len_of(Family::V6), 0);
        assert_eq!(p.target.len_of(Family::V4), 15);
    }

    #[test]
    fn an_empty_target_is_refused() {
        let v6_only = list(&["2400:cb00::/32"]);
        let l = Live::absent();
        let e = plan(Inputs {
            families: &[Family::V4],
            ..inputs(&v6_only, &l)
        })
        .unwrap_err();
        assert_eq!(e, Refused::Empty);
    }

    #[test]
    fn a_first_sync_is_never_a_shrink() {
        let cf = snapshot::cloudflare();
        let l = Live::absent();
        let p = plan(inputs(&cf, &l)).unwrap();
        assert_eq!(p.plan.unwrap().add.len(), 22);
    }

    #[test]
    fn verify_names_missing_and_extra_entries() {
        let want = list(&["1.0.0.0/24", "2.0.0.0/24"]);
        let p = Plan::new(&Live::absent(), &want).unwrap();
        assert_eq!(verify(&p, &live(want.clone())), Ok(()));
        let got = live(list(&["1.0.0.0/24", "3.0.0.0/24"]));
        let e = verify(&p, &got).unwrap_err();
        assert!(
            e.contains("missing 2.0.0.0/24") && e.contains("unexpected 3.0.0.0/24"),
            "{e}"
        );
        let mut outdated = live(want);
        outdated.structure = Structure::Outdated("chain missing".into());
        assert!(verify(&p, &outdated).unwrap_err().contains("chain missing"));
    }
}
