//! Model types shared by the engine and every backend.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family. The configuration spells it `ipv4` / `ipv6`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Family {
    /// IPv4.
    #[serde(rename = "ipv4")]
    V4,
    /// IPv6.
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The configuration name: `ipv4` or `ipv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The transport protocol(s) the allowlist governs. The configuration spells it `tcp`, `udp`,
/// `both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only (the default: HTTP/1.1 and HTTP/2).
    #[default]
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP (HTTP/3 to the origin uses UDP 443).
    Both,
}

impl Protocol {
    /// The protocol names as firewall tools spell them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Protocol::Tcp => &["tcp"],
            Protocol::Udp => &["udp"],
            Protocol::Both => &["tcp", "udp"],
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Both => "both",
        }
    }
}

/// What the managed rules look like, apart from the ranges: the same for every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Destination ports the allowlist governs; empty means every port.
    pub ports: Vec<u16>,
    /// Transport protocol(s).
    pub protocol: Protocol,
    /// Drop traffic to `ports` from any source not on the allowlist.
    pub restrict: bool,
    /// The families managed; a backend creates objects only for these.
    pub families: Vec<Family>,
}

impl Default for RuleSpec {
    fn default() -> Self {
        RuleSpec {
            ports: vec![80, 443],
            protocol: Protocol::Tcp,
            restrict: false,
            families: Family::ALL.to_vec(),
        }
    }
}

impl RuleSpec {
    /// Whether `family` is managed.
    pub fn manages(&self, family: Family) -> bool {
        self.families.contains(&family)
    }

    /// The ports joined with `,` (`80,443`), as multiport lists and ufw spell them.
    pub fn ports_csv(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A set of networks per family, kept sorted. Only parsed networks go in, so every
/// `to_string()` is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AllowList {
    /// IPv4 networks.
    pub v4: BTreeSet<Ipv4Net>,
    /// IPv6 networks.
    pub v6: BTreeSet<Ipv6Net>,
}

impl AllowList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one network; returns whether it was new.
    pub fn insert(&mut self, net: IpNet) -> bool {
        match net {
            IpNet::V4(n) => self.v4.insert(n),
            IpNet::V6(n) => self.v6.insert(n),
        }
    }

    /// Whether `net` is in the list (exactly, not by containment).
    pub fn contains(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => self.v4.contains(n),
            IpNet::V6(n) => self.v6.contains(n),
        }
    }

    /// Number of networks in both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Number of networks in one family.
    pub fn len_of(&self, family: Family) -> usize {
        match family {
            Family::V4 => self.v4.len(),
            Family::V6 => self.v6.len(),
        }
    }

    /// Whether both families are empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// All networks, IPv4 first, each family sorted.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(self.v6.iter().map(|n| IpNet::V6(*n)))
    }

    /// The networks of one family.
    pub fn iter_family(&self, family: Family) -> Box<dyn Iterator<Item = IpNet> + '_> {
        match family {
            Family::V4 => Box::new(self.v4.iter().map(|n| IpNet::V4(*n))),
            Family::V6 => Box::new(self.v6.iter().map(|n| IpNet::V6(*n))),
        }
    }

    /// Canonical strings of one family, sorted.
    pub fn strings(&self, family: Family) -> Vec<String> {
        self.iter_family(family).map(|n| n.to_string()).collect()
    }

    /// The entries in `self` and not in `other`.
    pub fn difference(&self, other: &AllowList) -> AllowList {
        AllowList {
            v4: self.v4.difference(&other.v4).copied().collect(),
            v6: self.v6.difference(&other.v6).copied().collect(),
        }
    }

    /// The entries in both.
    pub fn union(&self, other: &AllowList) -> AllowList {
        AllowList {
            v4: self.v4.union(&other.v4).copied().collect(),
            v6: self.v6.union(&other.v6).copied().collect(),
        }
    }

    /// Keeps only the families listed.
    pub fn only(&self, families: &[Family]) -> AllowList {
        AllowList {
            v4: if families.contains(&Family::V4) {
                self.v4.clone()
            } else {
                BTreeSet::new()
            },
            v6: if families.contains(&Family::V6) {
                self.v6.clone()
            } else {
                BTreeSet::new()
            },
        }
    }

    /// Merges overlapping and adjacent networks into the fewest covering networks, per family.
    pub fn aggregate(&self) -> AllowList {
        let v4: Vec<Ipv4Net> = self.v4.iter().copied().collect();
        let v6: Vec<Ipv6Net> = self.v6.iter().copied().collect();
        AllowList {
            v4: Ipv4Net::aggregate(&v4).into_iter().collect(),
            v6: Ipv6Net::aggregate(&v6).into_iter().collect(),
        }
    }
}

impl FromIterator<IpNet> for AllowList {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        let mut list = AllowList::new();
        for net in iter {
            list.insert(net);
        }
        list
    }
}

/// The state of a backend's own objects (tables, chains, sets, files, include lines) apart from
/// the entries in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Structure {
    /// None of the objects exist.
    Absent,
    /// The objects exist and match the [`RuleSpec`].
    Current,
    /// Some objects exist but are missing, damaged or built for another [`RuleSpec`]; the reason.
    Outdated(String),
}

impl Structure {
    /// The verdict from an inspection: nothing of ours `present` is `Absent`; otherwise `Current`
    /// when no `problems` were found, else `Outdated` with the problems joined.
    pub fn judge(present: bool, problems: &[String]) -> Structure {
        if !present {
            Structure::Absent
        } else if problems.is_empty() {
            Structure::Current
        } else {
            Structure::Outdated(problems.join("; "))
        }
    }
}

/// What a backend found in the live firewall: the entries it owns and the state of its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The entries currently in the backend's own objects.
    pub entries: AllowList,
    /// The state of the objects holding them.
    pub structure: Structure,
    /// Things the operator should know (ufw inactive, IPv6 disabled, ...).
    pub warnings: Vec<String>,
}

impl Live {
    /// Nothing of ours exists.
    pub fn absent() -> Self {
        Live {
            entries: AllowList::new(),
            structure: Structure::Absent,
            warnings: Vec::new(),
        }
    }

    /// Whether any object of ours exists (so `purge` has something to remove).
    pub fn is_present(&self) -> bool {
        self.structure != Structure::Absent || !self.entries.is_empty()
    }
}

/// The difference between the live firewall and the desired list: what `apply` does.
///
/// Built by [`Plan::new`], which returns `None` when there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The entries live before the change.
    pub before: AllowList,
    /// The entries live after the change.
    pub after: AllowList,
    /// Entries to add.
    pub add: AllowList,
    /// Entries to remove.
    pub remove: AllowList,
    /// When the objects themselves must be created or rebuilt: why.
    pub rebuild: Option<String>,
    /// Where the list came from, one line (`cloudflare api, fetched 2026-11-27T09:40:00Z`), for
    /// backends that record it (csf's file header). Set by the engine; not part of the diff.
    pub origin: Option<String>,
}

impl Plan {
    /// Compares what is live with what is wanted; `None` means the firewall is already right.
    pub fn new(live: &Live, desired: &AllowList) -> Option<Plan> {
        let rebuild = match &live.structure {
            Structure::Current => None,
            Structure::Absent => Some("the allowlist objects do not exist yet".to_string()),
            Structure::Outdated(why) => Some(why.clone()),
        };
        let add = desired.difference(&live.entries);
        let remove = live.entries.difference(desired);
        if rebuild.is_none() && add.is_empty() && remove.is_empty() {
            return None;
        }
        Some(Plan {
            before: live.entries.clone(),
            after: desired.clone(),
            add,
            remove,
            rebuild,
            origin: None,
        })
    }

    /// Entries present before and after.
    pub fn unchanged(&self) -> usize {
        self.before.len() - self.remove.len()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{} -{} ={}",
            self.add.len(),
            self.remove.len(),
            self.unchanged()
        )?;
        if let Some(why) = &self.rebuild {
            write!(f, " (rebuild: {why})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse::<IpNet>().unwrap()).collect()
    }

    fn current(entries: AllowList) -> Live {
        Live {
            entries,
            structure: Structure::Current,
            warnings: vec![],
        }
    }

    #[test]
    fn identical_is_no_plan() {
        let l = list(&["173.245.48.0/20", "2400:cb00::/32"]);
        assert_eq!(Plan::new(&current(l.clone()), &l), None);
    }

    #[test]
    fn plan_holds_both_directions() {
        let live = list(&["173.245.48.0/20", "104.16.0.0/12"]);
        let want = list(&["173.245.48.0/20", "104.16.0.0/13", "104.24.0.0/14"]);
        let plan = Plan::new(&current(live), &want).unwrap();
        assert_eq!(plan.add, list(&["104.16.0.0/13", "104.24.0.0/14"]));
        assert_eq!(plan.remove, list(&["104.16.0.0/12"]));
        assert_eq!(plan.unchanged(), 1);
        assert_eq!(plan.to_string(), "+2 -1 =1");
    }

    #[test]
    fn absent_structure_always_plans() {
        let plan = Plan::new(&Live::absent(), &AllowList::new()).unwrap();
        assert!(plan.rebuild.is_some());
        assert!(plan.add.is_empty());
    }

    #[test]
    fn aggregate_merges_overlaps_and_neighbours() {
        let l = list(&[
            "104.16.0.0/13",
            "104.24.0.0/14",
            "104.16.0.0/16",
            "10.0.0.0/25",
            "10.0.0.128/25",
        ]);
        assert_eq!(
            l.aggregate(),
            list(&["104.16.0.0/13", "104.24.0.0/14", "10.0.0.0/24"])
        );
    }
}
