//! What a command prints: text for people, one JSON object (`"schema": 1`) for machines.
//!
//! Rendering only: every value here was decided elsewhere.

use cfa_core::{AllowList, Family, Plan};
use serde_json::{json, Value};

use crate::sources::Resolved;

/// The JSON schema version of every object printed.
pub const SCHEMA: u32 = 1;

/// One list per family, canonical strings: `{"ipv4": [..], "ipv6": [..]}`.
pub fn families_json(list: &AllowList) -> Value {
    json!({ "ipv4": list.strings(Family::V4), "ipv6": list.strings(Family::V6) })
}

/// A change to the firewall (made, planned, or found unnecessary) by `sync` or `purge`.
#[derive(Debug)]
pub struct Change<'a> {
    /// `sync` or `purge`.
    pub command: &'static str,
    /// The backend's name.
    pub backend: &'a str,
    /// Before, after and the difference; for an unchanged firewall, before = after.
    pub plan: &'a Plan,
    /// Whether anything changed (or, in a dry run, would).
    pub changed: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Every configured source and where its list came from (none for purge).
    pub sources: &'a [Resolved],
    /// Whether a source served a fallback.
    pub degraded: bool,
    /// What the operator should know.
    pub warnings: &'a [String],
    /// What each output beyond the firewall did (nginx, Apache, Fail2Ban), in order.
    pub outputs: &'a [crate::outputs::Outcome],
}

impl Change<'_> {
    /// The JSON object (SPEC "JSON output").
    pub fn json(&self) -> Value {
        json!({
            "schema": SCHEMA,
            "command": self.command,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "backend": self.backend,
            "source": self.sources,
            "degraded": self.degraded,
            "added": families_json(&self.plan.add),
            "removed": families_json(&self.plan.remove),
            "unchanged": self.plan.unchanged(),
            "before": families_json(&self.plan.before),
            "after": families_json(&self.plan.after),
            "rebuild": self.plan.rebuild,
            "outputs": self.outputs,
            "warnings": self.warnings,
        })
    }

    /// The text: one summary line, then the rebuild reason and every removed and added range;
    /// then one line per output.
    pub fn text(&self) -> String {
        let mut s = self.firewall_text();
        for o in self.outputs {
            s.push_str(&o.text(self.dry_run));
        }
        s
    }

    fn firewall_text(&self) -> String {
        let backend = self.backend;
        let plan = self.plan;
        if self.command == "purge" {
            let n = plan.before.len();
            return match (self.changed, self.dry_run) {
                (false, _) => format!("{backend}: nothing to remove\n"),
                (true, true) => format!("{backend}: would remove the allowlist ({n} entries)\n"),
                (true, false) => format!("{backend}: removed the allowlist ({n} entries)\n"),
            };
        }
        if !self.changed {
            return format!("{backend}: up to date ({} entries)\n", plan.after.len());
        }
        let verb = if self.dry_run {
            "would change"
        } else {
            "changed"
        };
        let mut s = format!(
            "{backend}: {verb}: +{} -{} ={}\n",
            plan.add.len(),
            plan.remove.len(),
            plan.unchanged()
        );
        if let Some(why) = &plan.rebuild {
            s.push_str(&format!("  rebuild: {why}\n"));
        }
        for n in plan.remove.iter() {
            s.push_str(&format!("  - {n}\n"));
        }
        for n in plan.add.iter() {
            s.push_str(&format!("  + {n}\n"));
        }
        s
    }
}

/// A plan that changes nothing: `list` before and after.
pub fn unchanged(list: &AllowList) -> Plan {
    Plan {
        before: list.clone(),
        after: list.clone(),
        add: AllowList::new(),
        remove: AllowList::new(),
        rebuild: None,
        origin: None,
    }
}

/// The JSON object of a failed command.
pub fn error_json(kind: &str, message: &str) -> Value {
    json!({ "schema": SCHEMA, "error": { "kind": kind, "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::{snapshot, Live};

    #[test]
    fn sync_text_lists_removals_then_additions() {
        let cf = snapshot::cloudflare();
        let mut live = cf.clone();
        live.insert("198.51.100.0/24".parse().unwrap());
        let mut want = cf.clone();
        want.insert("203.0.113.0/24".parse().unwrap());
        let plan = Plan::new(
            &Live {
                entries: live,
                structure: cfa_core::Structure::Current,
                warnings: vec![],
            },
            &want,
        )
        .unwrap();
        let c = Change {
            command: "sync",
            backend: "nftables",
            plan: &plan,
            changed: true,
            dry_run: true,
            sources: &[],
            degraded: false,
            warnings: &[],
            outputs: &[],
        };
        assert_eq!(
            c.text(),
            "nftables: would change: +1 -1 =22\n  - 198.51.100.0/24\n  + 203.0.113.0/24\n"
        );
        let j = c.json();
        assert_eq!(j["schema"], 1);
        assert_eq!(j["added"]["ipv4"][0], "203.0.113.0/24");
        assert_eq!(j["unchanged"], 22);
    }

    #[test]
    fn purge_json_has_every_key_sync_has() {
        let cf = snapshot::cloudflare();
        let plan = Plan {
            before: cf.clone(),
            after: AllowList::new(),
            add: AllowList::new(),
            remove: cf,
            rebuild: None,
            origin: None,
        };
        let change = |command| Change {
            command,
            backend: "csf",
            plan: &plan,
            changed: true,
            dry_run: false,
            sources: &[],
            degraded: false,
            warnings: &[],
            outputs: &[],
        };
        let keys = |v: Value| {
            v.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "command")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(change("purge").json()), keys(change("sync").json()));
        assert_eq!(
            change("purge").text(),
            "csf: removed the allowlist (22 entries)\n"
        );
    }
}
