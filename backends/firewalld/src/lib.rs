//! The firewalld backend: the allowlist in firewalld's own configuration, changed through
//! `firewall-cmd`, in the permanent configuration and the runtime together.
//!
//! On a host that runs firewalld (RHEL, Rocky, Alma, Fedora), firewalld's table rejects whatever
//! its zones do not allow, and a reject in any nftables base chain is final: an accept in a table
//! of our own does nothing there, and older firewalld versions flushed the whole ruleset on
//! reload. So the allowlist lives in firewalld's configuration.
//!
//! # Objects owned (a compatibility contract: renaming them orphans old objects)
//!
//! With `name` (default `cf-allowlist`):
//!
//! - ipsets `cf-allowlist-v4` (`hash:net`, `family=inet`) and `cf-allowlist-v6` (`hash:net`,
//!   `family=inet6`), one per managed family, holding the ranges;
//! - policy `cf-allowlist`: ingress zone `ANY`, egress zone `HOST`, target `CONTINUE`, priority
//!   [`ACCEPT_PRIORITY`] (after every zone), one rich rule per family, protocol and port:
//!   `rule family="ipv4" source ipset="cf-allowlist-v4" port port="443" protocol="tcp" accept`
//!   (with `ports: []`: `protocol value="tcp"`, every port of the protocol);
//! - with `restrict: true`, policy `cf-allowlist-drop`: the same zones, priority
//!   [`DROP_PRIORITY`] (before every zone), one rule per family, protocol and port:
//!   `rule family="ipv4" source NOT ipset="cf-allowlist-v4" port port="443" protocol="tcp" drop`.
//!
//! Every object carries `<short>cf-allowlist</short>`: an object of that name without it is an
//! operator's, which this backend never rebuilds or deletes.
//!
//! # Why policies, not a zone or rich rules in the operator's zone
//!
//! - A zone bound to the ipsets as sources takes over *all* traffic from those addresses: they
//!   then lose whatever the public zone gave them (ssh, for one). For Cloudflare's ranges that may
//!   pass; for an address the operator adds (`cidrs: [office /32]`) it is a lockout.
//! - Rich rules in an operator's zone make firewalld rewrite that zone's XML file on every change
//!   (their comments and layout are lost) and tie the allowlist to one zone.
//! - A policy from `ANY` to `HOST` is firewalld's own object for "traffic to this host from any
//!   zone" (firewalld ≥ 0.9): it is evaluated inside every zone's chain, takes nothing over, and
//!   leaves every zone file byte for byte as it was. With a positive priority it runs after the
//!   zone's own rules: what a zone allows stays allowed, what a zone explicitly rejects (a
//!   Fail2Ban rich rule) stays rejected, and the policy's accept replaces only the zone's final
//!   default reject. `restrict` needs the opposite place: the drop policy has the lowest priority
//!   and so runs before every zone, dropping every source outside the ipsets on the governed
//!   ports whatever the zones open — without changing a zone.
//!
//! # How it changes things
//!
//! - **Read**: `firewall-cmd --state`, then `--list-all-policies` and `--info-ipset` for each
//!   family, once with `--permanent` and once for the runtime. Entries count as live when either
//!   layer has them; objects that differ between the layers make the structure outdated.
//! - **Entries only** (the usual change): per family and layer, `--ipset=...
//!   --remove-entries-from-file` for the entries that overlap a new one (firewalld refuses an
//!   overlapping add whole, `INVALID_ENTRY`), then `--add-entries-from-file`, then the other
//!   removals, so ranges that stay never lose coverage. Permanent first, then runtime; no reload.
//!   (At runtime firewalld replaces the kernel set's contents in one flush-and-refill: only new
//!   connections arriving within those milliseconds are affected; established ones are accepted
//!   by connection tracking before any policy.)
//! - **Rich rule changes** (ports, protocol): `--add-rich-rule`/`--remove-rich-rule`, one rule per
//!   call, permanent and runtime; no reload.
//! - **Objects created or removed** (the first sync, restrict switched, a family added or
//!   removed, purge, a damaged object): firewalld creates and deletes ipsets and policies only in
//!   its permanent configuration (`--new-ipset-from-file`, `--new-policy-from-file`,
//!   `--delete-*`), and a `--reload` makes the runtime follow. A reload drops runtime-only
//!   changes (by anyone: Fail2Ban's runtime bans too), so it happens only then, with a warning.
//!   A reload of a permanent configuration firewalld cannot load leaves it in its FAILED state
//!   with no rules at all (measured with 1.3.3: the host is left open), so before it the files
//!   are read back with `firewall-offline-cmd` (what the reload will load, hand edits included)
//!   and compared with what was asked, every ipset a zone or policy names must exist (a missing
//!   one is such a configuration, and `--check-config` does not see it), and `--check-config`
//!   runs; any failure undoes the permanent changes instead. For the same reason an ipset that a
//!   zone or policy of the operator uses is never deleted.
//! - Each step is recorded and undone in reverse on failure; a failed reload is recovered by
//!   undoing the permanent changes (with `firewall-offline-cmd` when firewalld is FAILED, since it
//!   then refuses permanent changes over D-Bus) and reloading the previous configuration. When an
//!   undo fails too, the error keeps both causes ([`BackendError::undo_failed`]).
//! - This backend never starts, stops, enables or restarts firewalld. `firewall-cmd --state`
//!   only asks the bus: firewalld ships no D-Bus activation file (checked with Debian 12's
//!   firewalld 1.3.3), so the question cannot start it.

pub mod text;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use cfa_core::process::{CommandError, CommandErrorKind, Output};
use cfa_core::{AllowList, Backend, BackendError, Family, Live, Plan, RuleSpec, Runner, Structure};
use ipnet::IpNet;

use crate::text::{
    entries_file, entry_net, ipset_uses, ipset_xml, parse_blocks, policy_xml, Action, Block,
    IpsetInfo, PolicyInfo, Rule,
};

/// The default name of our objects: ipsets `cf-allowlist-v4`/`-v6`, policies `cf-allowlist` and
/// `cf-allowlist-drop`.
pub const DEFAULT_NAME: &str = "cf-allowlist";
/// The longest `name`: firewalld allows policy names of at most 18 characters (the longest
/// iptables chain it derives from one, `POST_<policy>_allow`, must fit 28), and `-drop` is added.
pub const MAX_NAME_LEN: usize = 13;
/// The accept policy's priority: the highest, so it runs after every zone's own rules and every
/// other policy.
pub const ACCEPT_PRIORITY: i32 = 32767;
/// The restrict policy's priority: the lowest, so its drop comes before every zone and policy.
pub const DROP_PRIORITY: i32 = -32768;
/// The most entries a firewalld ipset holds by default (`maxelem`).
pub const MAX_ENTRIES: usize = 65536;
/// The `<short>` of every object we create: what tells ours from an operator's of that name.
pub const OWNER_MARK: &str = cfa_core::RULE_COMMENT;

const IPSET_TYPE: &str = "hash:net";

/// `firewall-cmd` exit codes this backend acts on (firewall/errors.py).
mod code {
    pub const DBUS_ERROR: i32 = 36;
    pub const INVALID_IPSET: i32 = 135;
    pub const RUNNING_BUT_FAILED: i32 = 251;
    pub const NOT_RUNNING: i32 = 252;
    /// argparse's usage error: an option this firewall-cmd does not know.
    pub const USAGE: i32 = 2;
}

/// Settings from the configuration's `firewalld:` key, and how to reach firewalld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewalldOptions {
    /// The name our objects derive from (see the crate documentation). Checked by
    /// [`validate_name`]. Default [`DEFAULT_NAME`].
    pub name: String,
    /// The `firewall-cmd` program and any leading arguments, an argument vector. Default
    /// `["firewall-cmd"]`. (Tests prepend `env DBUS_SYSTEM_BUS_ADDRESS=...` to reach a private
    /// bus.)
    pub command: Vec<String>,
    /// The `firewall-offline-cmd` program: it reads the permanent configuration's files before a
    /// reload, and undoes permanent changes while firewalld is in its FAILED state. Default
    /// `["firewall-offline-cmd"]`.
    pub offline_command: Vec<String>,
    /// firewalld's configuration directory as this process sees it. Default `/etc/firewalld`.
    /// Read only to remove the copy of the default zone that `firewall-offline-cmd` writes there
    /// when it changes a policy (see [`FirewalldBackend`]'s recovery).
    pub config_dir: PathBuf,
}

impl Default for FirewalldOptions {
    fn default() -> Self {
        FirewalldOptions {
            name: DEFAULT_NAME.to_string(),
            command: vec!["firewall-cmd".to_string()],
            offline_command: vec!["firewall-offline-cmd".to_string()],
            config_dir: PathBuf::from("/etc/firewalld"),
        }
    }
}

/// Checks `name` as firewalld reads policy and ipset names: 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, `-` or `_`, starting with a letter (firewalld itself also takes non-ASCII letters,
/// which other tools then mangle).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{name:?} must be 1 to {MAX_NAME_LEN} characters (firewalld allows 18 for a policy \
             name, and `-drop` is added)"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?} must start with an ASCII letter and hold only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// What `firewall-cmd --state` says, for `backend: auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// firewalld runs.
    Running,
    /// firewalld runs but could not load its configuration (`failed`): it is this host's
    /// firewall all the same, and the backend reports the failure.
    Failed,
    /// `firewall-cmd` is installed but firewalld does not answer; why, in firewall-cmd's words.
    NotRunning(String),
    /// No `firewall-cmd`.
    NotInstalled,
}

/// Asks `firewall-cmd --state` (never starts anything).
pub fn status(runner: &Runner) -> Status {
    status_with(runner, &FirewalldOptions::default().command)
}

/// [`status`] through another `firewall-cmd` command vector.
pub fn status_with(runner: &Runner, command: &[String]) -> Status {
    let Some((program, lead)) = command.split_first() else {
        return Status::NotInstalled;
    };
    let mut args: Vec<String> = lead.to_vec();
    args.push("--state".into());
    match runner.run_status(program, &args, None) {
        Err(e) if e.is_not_found() => Status::NotInstalled,
        Err(e) => Status::NotRunning(e.to_string()),
        Ok((st, out)) => match st.code() {
            Some(0) if out.stdout.trim() == "running" => Status::Running,
            Some(code::RUNNING_BUT_FAILED) => Status::Failed,
            _ => {
                let said = format!("{} {}", out.stdout.trim(), out.stderr.trim());
                Status::NotRunning(format!("`firewall-cmd --state`: {}", said.trim()))
            }
        },
    }
}

/// The two layers of firewalld's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Permanent,
    Runtime,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Permanent => "permanent",
            Layer::Runtime => "runtime",
        }
    }
}

/// Our two policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Lets the allowlist in (after the zones).
    Accept,
    /// restrict: drops everyone else (before the zones).
    Drop,
}

const KINDS: [Kind; 2] = [Kind::Accept, Kind::Drop];

fn fi(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn ki(kind: Kind) -> usize {
    match kind {
        Kind::Accept => 0,
        Kind::Drop => 1,
    }
}

/// Our objects in one layer, as firewalld reports them.
#[derive(Debug, Clone, Default)]
struct LayerScan {
    ipsets: [Option<IpsetInfo>; 2],
    policies: [Option<PolicyInfo>; 2],
    /// The other policies, for uses of our ipsets.
    others: Vec<Block>,
}

impl LayerScan {
    fn present(&self) -> bool {
        self.ipsets.iter().any(Option::is_some) || self.policies.iter().any(Option::is_some)
    }
}

#[derive(Debug, Clone)]
struct Scan {
    permanent: LayerScan,
    runtime: LayerScan,
}

/// What our objects should be (`None`: absent): the entries of each ipset, the rules of each
/// policy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    ipsets: [Option<Vec<String>>; 2],
    policies: [Option<BTreeSet<Rule>>; 2],
}

impl Want {
    fn nothing() -> Want {
        Want {
            ipsets: [None, None],
            policies: [None, None],
        }
    }
}

/// One argument of a call: literal, or an option naming one of the apply's files (its path is
/// known only once the files are written).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Lit(String),
    File(&'static str, String),
}

type Call = Vec<Arg>;

fn lit(args: &[String]) -> Call {
    args.iter().cloned().map(Arg::Lit).collect()
}

/// One `firewall-cmd` call of an apply and the calls that undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    layer: Layer,
    what: String,
    call: Call,
    undo: Vec<Call>,
}

/// The calls of an apply: permanent steps, then either a reload or the runtime steps.
#[derive(Debug, Default)]
struct Steps {
    permanent: Vec<Step>,
    reload: bool,
    runtime: Vec<Step>,
    /// The files the calls read: name and contents.
    files: Vec<(String, String)>,
}

impl Steps {
    fn is_empty(&self) -> bool {
        self.permanent.is_empty() && self.runtime.is_empty() && !self.reload
    }

    /// Adds a file; its path in the work directory is `N/stem`: firewall-cmd names an object
    /// created from a file after the file (and checks that name) whatever `--name` says, so the
    /// file name must be the object's.
    fn file(&mut self, stem: &str, contents: String) -> String {
        let name = format!("{}/{stem}", self.files.len());
        self.files.push((name.clone(), contents));
        name
    }
}

/// What one layer needs done to its objects (entries and rules aside).
#[derive(Debug, Default)]
struct ObjectPlan {
    delete_policies: Vec<Kind>,
    delete_ipsets: Vec<Family>,
    create_ipsets: Vec<Family>,
    create_policies: Vec<Kind>,
    /// Attributes of ours we never set, per policy: `(kind, "services: ssh")`.
    extras: Vec<(Kind, String)>,
}

impl ObjectPlan {
    fn changes_objects(&self) -> bool {
        !(self.delete_policies.is_empty()
            && self.delete_ipsets.is_empty()
            && self.create_ipsets.is_empty()
            && self.create_policies.is_empty())
    }
}

/// The firewalld backend. See the crate documentation.
#[derive(Debug, Clone)]
pub struct FirewalldBackend {
    options: FirewalldOptions,
    spec: RuleSpec,
    runner: Runner,
}

/// A directory of our own (mode 0700) for the files `firewall-cmd` reads, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir, BackendError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut last = None;
        for attempt in 0..32 {
            let path = base.join(format!(
                "cf-allowlist-firewalld-{}-{stamp}-{attempt}",
                std::process::id()
            ));
            // create, not create_all: an existing path (someone's link) is never used.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(WorkDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(BackendError::io("creating", path, e)),
            }
        }
        Err(BackendError::io(
            "creating a work directory in",
            base,
            last.unwrap_or_else(|| std::io::Error::other("no free name")),
        ))
    }

    fn write(&self, name: &str, contents: &str) -> Result<(), BackendError> {
        use std::io::Write;
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| BackendError::io("creating", parent, e))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| BackendError::io("creating", &path, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| BackendError::io("writing", &path, e))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn exit_code(e: &CommandError) -> Option<i32> {
    match &e.kind {
        CommandErrorKind::Failed { status, .. } => status.code(),
        _ => None,
    }
}

/// Adds `note` to an error's message, keeping its kind.
fn annotate(cause: BackendError, note: &str) -> BackendError {
    match cause {
        BackendError::Command { action, source } => BackendError::Command {
            action: format!("{action} ({note})"),
            source,
        },
        BackendError::Conflict(m) => BackendError::Conflict(format!("{m} ({note})")),
        BackendError::Verify(m) => BackendError::Verify(format!("{m} ({note})")),
        other => other,
    }
}

/// The start and end of a network as numbers, for overlap tests across one family.
fn span(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// For each of `nets`, whether it overlaps one of `others` (same family assumed).
fn overlapping(nets: &[IpNet], others: &[IpNet]) -> Vec<bool> {
    let mut spans: Vec<(u128, u128)> = others.iter().map(span).collect();
    spans.sort_unstable();
    let mut max_end = Vec::with_capacity(spans.len());
    let mut m = 0u128;
    for (i, (_, e)) in spans.iter().enumerate() {
        m = if i == 0 { *e } else { m.max(*e) };
        max_end.push(m);
    }
    nets.iter()
        .map(|n| {
            let (s, e) = span(n);
            let idx = spans.partition_point(|(start, _)| *start <= e);
            idx > 0 && max_end[idx - 1] >= s
        })
        .collect()
}

impl FirewalldBackend {
    /// A backend for the rules described by `spec`, running `firewall-cmd` through `runner`.
    pub fn new(
        options: FirewalldOptions,
        spec: RuleSpec,
        runner: Runner,
    ) -> Result<Self, BackendError> {
        validate_name(&options.name)
            .map_err(|e| BackendError::Conflict(format!("firewalld.name: {e}")))?;
        if options.command.is_empty() || options.offline_command.is_empty() {
            return Err(BackendError::Conflict(
                "the firewall-cmd command vector is empty".into(),
            ));
        }
        Ok(FirewalldBackend {
            options,
            spec,
            runner,
        })
    }

    /// The ipset holding one family's ranges: `<name>-v4`, `<name>-v6`.
    pub fn ipset_name(&self, family: Family) -> String {
        match family {
            Family::V4 => format!("{}-v4", self.options.name),
            Family::V6 => format!("{}-v6", self.options.name),
        }
    }

    /// The accept policy (`<name>`) and, with restrict, the drop policy (`<name>-drop`).
    pub fn policy_names(&self) -> [String; 2] {
        [self.policy_name(Kind::Accept), self.policy_name(Kind::Drop)]
    }

    fn policy_name(&self, kind: Kind) -> String {
        match kind {
            Kind::Accept => self.options.name.clone(),
            Kind::Drop => format!("{}-drop", self.options.name),
        }
    }

    fn priority(kind: Kind) -> i32 {
        match kind {
            Kind::Accept => ACCEPT_PRIORITY,
            Kind::Drop => DROP_PRIORITY,
        }
    }

    fn family_option(family: Family) -> &'static str {
        match family {
            Family::V4 => "family=inet",
            Family::V6 => "family=inet6",
        }
    }

    /// Our rules for one policy, for the managed families.
    fn rules(&self, kind: Kind) -> BTreeSet<Rule> {
        let mut rules = BTreeSet::new();
        let ports: Vec<Option<u16>> = if self.spec.ports.is_empty() {
            vec![None]
        } else {
            self.spec.ports.iter().copied().map(Some).collect()
        };
        for family in Family::ALL {
            if !self.spec.manages(family) {
                continue;
            }
            for protocol in self.spec.protocol.names() {
                for port in &ports {
                    rules.insert(Rule {
                        family,
                        ipset: self.ipset_name(family),
                        invert: kind == Kind::Drop,
                        protocol: protocol.to_string(),
                        port: *port,
                        action: match kind {
                            Kind::Accept => Action::Accept,
                            Kind::Drop => Action::Drop,
                        },
                    });
                }
            }
        }
        rules
    }

    /// What our objects should be for the spec, with `target`'s entries (`None`: structure only).
    fn want(&self, target: Option<&AllowList>) -> Result<Want, BackendError> {
        if self.spec.restrict && self.spec.ports.is_empty() {
            return Err(BackendError::Conflict(
                "restrict: true needs ports: a drop of every port from every other source would \
                 lock out SSH"
                    .into(),
            ));
        }
        let mut want = Want::nothing();
        for family in Family::ALL {
            if !self.spec.manages(family) {
                continue;
            }
            let entries = match target {
                Some(t) => {
                    let nets: Vec<IpNet> = t.iter_family(family).collect();
                    if nets.len() > MAX_ENTRIES {
                        return Err(BackendError::Conflict(format!(
                            "the allowlist has {} {family} ranges; a firewalld ipset holds at most \
                             {MAX_ENTRIES}",
                            nets.len()
                        )));
                    }
                    // firewalld refuses overlapping entries in a hash:net ipset (the engine's
                    // list is aggregated, so this only catches a broken caller).
                    let mut sorted: Vec<(u128, u128, IpNet)> =
                        nets.iter().map(|n| (span(n).0, span(n).1, *n)).collect();
                    sorted.sort_unstable();
                    for pair in sorted.windows(2) {
                        if pair[1].0 <= pair[0].1 {
                            return Err(BackendError::Conflict(format!(
                                "the allowlist has overlapping ranges {} and {}, which a firewalld \
                                 ipset refuses",
                                pair[0].2, pair[1].2
                            )));
                        }
                    }
                    nets.iter().map(|n| n.to_string()).collect()
                }
                None => Vec::new(),
            };
            want.ipsets[fi(family)] = Some(entries);
        }
        want.policies[ki(Kind::Accept)] = Some(self.rules(Kind::Accept));
        if self.spec.restrict {
            want.policies[ki(Kind::Drop)] = Some(self.rules(Kind::Drop));
        }
        Ok(want)
    }

    // ---- talking to firewall-cmd ----

    fn program(&self, offline: bool) -> (&str, &[String]) {
        let command = if offline {
            &self.options.offline_command
        } else {
            &self.options.command
        };
        let (first, rest) = command.split_first().expect("checked in new");
        (first.as_str(), rest)
    }

    /// Runs `firewall-cmd [--permanent] args` (or `firewall-offline-cmd args` with `offline`).
    fn call(
        &self,
        layer: Option<Layer>,
        args: &[String],
        offline: bool,
    ) -> Result<Output, CommandError> {
        let (program, lead) = self.program(offline);
        let mut full: Vec<String> = lead.to_vec();
        if layer == Some(Layer::Permanent) && !offline {
            full.push("--permanent".into());
        }
        full.extend(args.iter().cloned());
        self.runner.run(program, &full, None)
    }

    fn call_ok(
        &self,
        layer: Option<Layer>,
        args: &[String],
        action: &str,
    ) -> Result<Output, BackendError> {
        self.call(layer, args, false)
            .map_err(|e| self.tool_error(action, e))
    }

    /// A failed call as an error that says what firewalld's state means for it.
    fn tool_error(&self, action: &str, e: CommandError) -> BackendError {
        if e.is_not_found() {
            return BackendError::command(format!("{action} (is firewalld installed?)"), e);
        }
        match exit_code(&e) {
            Some(code::NOT_RUNNING) => BackendError::Conflict(format!(
                "firewalld is not running ({e}); cf-allowlist never starts it: start it \
                 (`systemctl start firewalld`) or choose another backend"
            )),
            Some(code::RUNNING_BUT_FAILED) => BackendError::Conflict(format!(
                "firewalld is in its FAILED state ({e}): it could not load its permanent \
                 configuration and runs without its rules. Find the error with \
                 `firewall-offline-cmd --check-config` and firewalld's log, fix it, then \
                 `firewall-cmd --reload`"
            )),
            Some(code::DBUS_ERROR) => BackendError::Conflict(format!(
                "cannot reach firewalld over D-Bus ({e}); is firewalld (and the system bus) \
                 running?"
            )),
            _ => BackendError::command(action, e),
        }
    }

    /// `firewall-cmd --state` must say `running`.
    fn require_running(&self) -> Result<(), BackendError> {
        let out = self.call_ok(None, &["--state".into()], "checking firewalld's state")?;
        if out.stdout.trim() == "running" {
            Ok(())
        } else {
            Err(BackendError::Conflict(format!(
                "firewalld's state is {:?}, not running",
                out.stdout.trim()
            )))
        }
    }

    /// Reads our objects in one layer; with `offline`, the permanent configuration as its files
    /// say (what a reload will load), through `firewall-offline-cmd`.
    fn scan_layer(&self, layer: Layer, offline: bool) -> Result<LayerScan, BackendError> {
        let mut scan = LayerScan::default();
        let tool = if offline {
            "firewall-offline-cmd".to_string()
        } else {
            format!("firewall-cmd --{}", layer.name())
        };
        let what = format!("{tool} --list-all-policies");
        let out = self
            .call(Some(layer), &["--list-all-policies".into()], offline)
            .map_err(|e| {
                if exit_code(&e) == Some(code::USAGE) {
                    BackendError::Conflict(format!(
                        "this firewalld has no policies ({e}): cf-allowlist's firewalld backend \
                         needs firewalld 0.9 or later (RHEL 8.6+, 9)"
                    ))
                } else {
                    self.tool_error(&format!("running {what}"), e)
                }
            })?;
        let names = self.policy_names();
        for block in parse_blocks(&out.stdout).map_err(|reason| BackendError::Parse {
            what: what.clone(),
            reason,
        })? {
            match names.iter().position(|n| *n == block.name) {
                Some(i) => {
                    let info =
                        PolicyInfo::from_block(&block).map_err(|reason| BackendError::Parse {
                            what: what.clone(),
                            reason,
                        })?;
                    scan.policies[i] = Some(info);
                }
                None => scan.others.push(block),
            }
        }
        for family in Family::ALL {
            let name = self.ipset_name(family);
            match self.call(Some(layer), &[format!("--info-ipset={name}")], offline) {
                Ok(out) => {
                    let what = format!("{tool} --info-ipset={name}");
                    let blocks =
                        parse_blocks(&out.stdout).map_err(|reason| BackendError::Parse {
                            what: what.clone(),
                            reason,
                        })?;
                    let block = blocks.first().ok_or_else(|| BackendError::Parse {
                        what: what.clone(),
                        reason: "no output".into(),
                    })?;
                    let info = IpsetInfo::from_block(block)
                        .map_err(|reason| BackendError::Parse { what, reason })?;
                    scan.ipsets[fi(family)] = Some(info);
                }
                Err(e) if exit_code(&e) == Some(code::INVALID_IPSET) => {}
                Err(e) => {
                    return Err(
                        self.tool_error(&format!("reading the {} ipset {name}", layer.name()), e)
                    )
                }
            }
        }
        Ok(scan)
    }

    fn scan(&self) -> Result<Scan, BackendError> {
        self.require_running()?;
        Ok(Scan {
            permanent: self.scan_layer(Layer::Permanent, false)?,
            runtime: self.scan_layer(Layer::Runtime, false)?,
        })
    }

    // ---- judging what is there ----

    fn ipset_shape_ok(family: Family, info: &IpsetInfo) -> bool {
        info.kind == IPSET_TYPE && info.options == [Self::family_option(family)]
    }

    /// Why a policy of ours is not what we would create, its rules aside.
    fn policy_shape_problems(&self, kind: Kind, info: &PolicyInfo) -> Vec<String> {
        let mut problems = Vec::new();
        let name = &info.name;
        if info.priority != Self::priority(kind) {
            problems.push(format!(
                "policy {name} has priority {}, not {}",
                info.priority,
                Self::priority(kind)
            ));
        }
        if info.target != "CONTINUE" {
            problems.push(format!(
                "policy {name} has target {}, not CONTINUE",
                info.target
            ));
        }
        if info.ingress != ["ANY"] || info.egress != ["HOST"] {
            problems.push(format!(
                "policy {name} goes from [{}] to [{}], not from ANY to HOST",
                info.ingress.join(" "),
                info.egress.join(" ")
            ));
        }
        for extra in &info.extras {
            problems.push(format!(
                "policy {name} has {extra}, which cf-allowlist never sets"
            ));
        }
        problems
    }

    fn entry_problems(&self, family: Family, info: &IpsetInfo) -> Option<String> {
        let odd: Vec<&String> = info
            .entries
            .iter()
            .filter(|e| {
                entry_net(e).is_none_or(|n| Family::of(&n) != family || n.to_string() != **e)
            })
            .collect();
        (!odd.is_empty()).then(|| {
            let shown: Vec<&str> = odd.iter().take(5).map(|s| s.as_str()).collect();
            format!(
                "ipset {} has {} entr{} cf-allowlist would not write ({}{})",
                info.name,
                odd.len(),
                if odd.len() == 1 { "y" } else { "ies" },
                shown.join(", "),
                if odd.len() > 5 { ", ..." } else { "" }
            )
        })
    }

    /// Why one layer's objects are not `want` (entries compared only with `entries_too`).
    fn layer_problems(
        &self,
        layer: Layer,
        scan: &LayerScan,
        want: &Want,
        entries_too: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for family in Family::ALL {
            let name = self.ipset_name(family);
            match (&want.ipsets[fi(family)], &scan.ipsets[fi(family)]) {
                (None, None) => {}
                (None, Some(_)) => {
                    problems.push(format!("ipset {name} exists, but {family} is not managed"))
                }
                (Some(_), None) => problems.push(format!("ipset {name} is missing")),
                (Some(entries), Some(info)) => {
                    if !Self::ipset_shape_ok(family, info) {
                        problems.push(format!(
                            "ipset {name} is {} [{}], not {IPSET_TYPE} [{}]",
                            info.kind,
                            info.options.join(" "),
                            Self::family_option(family)
                        ));
                    }
                    problems.extend(self.entry_problems(family, info));
                    if entries_too {
                        let have: BTreeSet<&String> = info.entries.iter().collect();
                        let want: BTreeSet<&String> = entries.iter().collect();
                        if have != want {
                            problems.push(format!(
                                "ipset {name} has {} entries to add and {} to remove",
                                want.difference(&have).count(),
                                have.difference(&want).count()
                            ));
                        }
                    }
                }
            }
        }
        for kind in KINDS {
            let name = self.policy_name(kind);
            match (&want.policies[ki(kind)], &scan.policies[ki(kind)]) {
                (None, None) => {}
                (None, Some(_)) => problems.push(match kind {
                    Kind::Drop => format!("policy {name} exists, but restrict is off"),
                    Kind::Accept => format!("policy {name} exists"),
                }),
                (Some(_), None) => problems.push(format!("policy {name} is missing")),
                (Some(rules), Some(info)) => {
                    problems.extend(self.policy_shape_problems(kind, info));
                    let have: BTreeSet<&str> = info.rich_rules.iter().map(String::as_str).collect();
                    let texts: Vec<String> = rules.iter().map(Rule::text).collect();
                    let want: BTreeSet<&str> = texts.iter().map(String::as_str).collect();
                    let missing: Vec<&&str> = want.difference(&have).collect();
                    let extra: Vec<&&str> = have.difference(&want).collect();
                    if let Some(r) = missing.first() {
                        problems.push(format!(
                            "policy {name} lacks {} rule(s), such as `{r}`",
                            missing.len()
                        ));
                    }
                    if let Some(r) = extra.first() {
                        problems.push(format!(
                            "policy {name} has {} rule(s) cf-allowlist would not write, such as \
                             `{r}`",
                            extra.len()
                        ));
                    }
                }
            }
        }
        problems
            .into_iter()
            .map(|p| format!("{}: {p}", layer.name()))
            .collect()
    }

    /// What one layer needs done to its objects to match `want`.
    fn object_plan(&self, scan: &LayerScan, want: &Want) -> ObjectPlan {
        let mut plan = ObjectPlan::default();
        for family in Family::ALL {
            match (&want.ipsets[fi(family)], &scan.ipsets[fi(family)]) {
                (None, Some(_)) => plan.delete_ipsets.push(family),
                (Some(_), None) => plan.create_ipsets.push(family),
                (Some(_), Some(info)) if !Self::ipset_shape_ok(family, info) => {
                    plan.delete_ipsets.push(family);
                    plan.create_ipsets.push(family);
                }
                _ => {}
            }
        }
        // Deleting an ipset that a policy of ours still names would leave a configuration
        // firewalld cannot load: such a run rebuilds our policies around it.
        let rebuild_policies = !plan.delete_ipsets.is_empty();
        for kind in KINDS {
            match (&want.policies[ki(kind)], &scan.policies[ki(kind)]) {
                (None, Some(_)) => plan.delete_policies.push(kind),
                (Some(_), None) => plan.create_policies.push(kind),
                (Some(_), Some(info)) => {
                    for extra in &info.extras {
                        plan.extras.push((kind, extra.clone()));
                    }
                    let shape_ok = self.policy_shape_problems(kind, info).is_empty();
                    if !shape_ok || rebuild_policies {
                        plan.delete_policies.push(kind);
                        plan.create_policies.push(kind);
                    }
                }
                (None, None) => {}
            }
        }
        // The drop policy goes first and comes last: a half-done run never leaves it without
        // the accept policy's ranges, which it spares anyway (it drops only outsiders).
        plan.delete_policies.sort_by_key(|k| match k {
            Kind::Drop => 0,
            Kind::Accept => 1,
        });
        plan
    }

    fn live_from(&self, scan: &Scan) -> Result<Live, BackendError> {
        let want = self.want(None)?;
        let mut problems = self.layer_problems(Layer::Permanent, &scan.permanent, &want, false);
        problems.extend(self.layer_problems(Layer::Runtime, &scan.runtime, &want, false));
        let mut entries = AllowList::new();
        for family in Family::ALL {
            if !self.spec.manages(family) {
                continue;
            }
            let layers = [
                &scan.permanent.ipsets[fi(family)],
                &scan.runtime.ipsets[fi(family)],
            ];
            for info in layers.into_iter().flatten() {
                entries.extend_family(family, &info.entries);
            }
            if let [Some(p), Some(r)] = layers {
                let p: BTreeSet<&String> = p.entries.iter().collect();
                let r: BTreeSet<&String> = r.entries.iter().collect();
                if p != r {
                    problems.push(format!(
                        "ipset {}: {} entries only at runtime, {} only in the permanent \
                         configuration",
                        self.ipset_name(family),
                        r.difference(&p).count(),
                        p.difference(&r).count()
                    ));
                }
            }
        }
        let present = scan.permanent.present() || scan.runtime.present();
        let mut warnings = Vec::new();
        let perm = self.object_plan(&scan.permanent, &want);
        let rt = self.object_plan(&scan.runtime, &want);
        if perm.changes_objects() || rt.changes_objects() || !rt.extras.is_empty() {
            warnings.push(format!(
                "creating or removing cf-allowlist's firewalld objects ({}) takes a \
                 `firewall-cmd --reload`, which drops every runtime-only firewalld change (made \
                 without --permanent, by anyone)",
                self.object_names().join(", ")
            ));
        }
        let structure = match problems.len() {
            _ if !present => Structure::Absent,
            0 => Structure::Current,
            1 => Structure::Outdated(problems.remove(0)),
            n => Structure::Outdated(format!("{} (and {} more)", problems[0], n - 1)),
        };
        Ok(Live {
            entries,
            structure,
            warnings,
        })
    }

    fn object_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Family::ALL
            .iter()
            .filter(|f| self.spec.manages(**f))
            .map(|f| format!("ipset {}", self.ipset_name(*f)))
            .collect();
        names.push(format!("policy {}", self.policy_name(Kind::Accept)));
        if self.spec.restrict {
            names.push(format!("policy {}", self.policy_name(Kind::Drop)));
        }
        names
    }

    // ---- planning ----

    /// Refuses to delete or rebuild an object of our name that we did not create.
    fn check_owner(&self, what: &str, name: &str) -> Result<(), BackendError> {
        let out = self.call_ok(
            Some(Layer::Permanent),
            &[format!("--{what}={name}"), "--get-short".into()],
            &format!("reading the short description of the firewalld {what} {name}"),
        )?;
        let short = out.stdout.trim();
        if short == OWNER_MARK {
            Ok(())
        } else {
            Err(BackendError::Conflict(format!(
                "the firewalld {what} {name} was not created by cf-allowlist (its short \
                 description is {short:?}, not {OWNER_MARK:?}), and it is not what cf-allowlist \
                 would write: cf-allowlist neither rebuilds nor deletes it. Delete or rename it \
                 yourself, or set `firewalld.name` to another name"
            )))
        }
    }

    /// Refuses to delete an ipset that a zone or policy of the operator uses in the permanent
    /// configuration: firewalld would fail to load it at the next reload.
    fn check_unused(&self, scan: &Scan, families: &[Family]) -> Result<(), BackendError> {
        if families.is_empty() {
            return Ok(());
        }
        let what = "firewall-cmd --permanent --list-all-zones";
        let out = self.call_ok(
            Some(Layer::Permanent),
            &["--list-all-zones".into()],
            &format!("running {what}"),
        )?;
        let zones = parse_blocks(&out.stdout).map_err(|reason| BackendError::Parse {
            what: what.into(),
            reason,
        })?;
        let mut uses = Vec::new();
        for family in families {
            let name = self.ipset_name(*family);
            for (kind, blocks) in [("zone", &zones), ("policy", &scan.permanent.others)] {
                for block in blocks.iter() {
                    for u in ipset_uses(block, &name) {
                        uses.push(format!("{kind} {} uses ipset {name} ({u})", block.name));
                    }
                }
            }
        }
        if uses.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Conflict(format!(
                "cannot delete cf-allowlist's ipset: the firewalld {}; firewalld would then fail \
                 to load its permanent configuration at the next reload and leave the host \
                 without a firewall. Remove that use first; nothing was changed",
                uses.join("; the firewalld ")
            )))
        }
    }

    /// Every ipset a zone or policy of the permanent configuration uses must exist, as its files
    /// say (`perm`: our objects and the other policies, read offline): firewalld's
    /// `--check-config` does not check this, and a reload of such a configuration leaves
    /// firewalld FAILED with no rules at all (measured with firewalld 1.3).
    fn check_ipset_uses(&self, perm: &LayerScan) -> Result<(), BackendError> {
        let layer = Some(Layer::Permanent);
        let tool = "firewall-offline-cmd";
        let ipsets = self
            .call(layer, &["--get-ipsets".into()], true)
            .map_err(|e| self.tool_error(&format!("running {tool} --get-ipsets"), e))?;
        let ipsets: BTreeSet<&str> = ipsets.stdout.split_whitespace().collect();
        let zones = self
            .call(layer, &["--list-all-zones".into()], true)
            .map_err(|e| self.tool_error(&format!("running {tool} --list-all-zones"), e))?;
        let zones = parse_blocks(&zones.stdout).map_err(|reason| BackendError::Parse {
            what: format!("{tool} --list-all-zones"),
            reason,
        })?;
        let mut uses: Vec<(String, String)> = Vec::new();
        for (kind, blocks) in [("zone", &zones), ("policy", &perm.others)] {
            for block in blocks.iter() {
                for name in text::ipsets_named(block) {
                    uses.push((format!("{kind} {}", block.name), name));
                }
            }
        }
        for info in perm.policies.iter().flatten() {
            for rule in &info.rich_rules {
                for name in text::ipsets_in_rule(rule) {
                    uses.push((format!("policy {}", info.name), name));
                }
            }
        }
        let missing: Vec<String> = uses
            .into_iter()
            .filter(|(_, name)| !ipsets.contains(name.as_str()))
            .map(|(user, name)| format!("{user} uses ipset {name}"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Conflict(format!(
                "firewalld's permanent configuration names ipsets that do not exist (the \
                 firewalld {}): a reload would leave firewalld FAILED and the host without a \
                 firewall, so cf-allowlist does not reload it. Fix that configuration first",
                missing.join(", the firewalld ")
            )))
        }
    }

    fn description(&self, what: &str) -> String {
        format!(
            "Managed by cf-allowlist ({what}). Every sync rewrites it; `cf-allowlist purge` \
             removes it."
        )
    }

    fn ipset_file(&self, family: Family, options: &[String], entries: &[String]) -> String {
        ipset_xml(
            IPSET_TYPE,
            OWNER_MARK,
            &self.description(&format!("the allowlist's {family} ranges")),
            options,
            entries,
        )
    }

    fn policy_description(kind: Kind) -> &'static str {
        match kind {
            Kind::Accept => "lets the allowlist's ranges reach the governed ports, after the zones",
            Kind::Drop => {
                "restrict: drops every other source on the governed ports, before the zones"
            }
        }
    }

    fn create_ipset_step(&self, steps: &mut Steps, family: Family, entries: &[String]) {
        let name = self.ipset_name(family);
        let xml = self.ipset_file(family, &[Self::family_option(family).to_string()], entries);
        let file = steps.file(&format!("{name}.xml"), xml);
        steps.permanent.push(Step {
            layer: Layer::Permanent,
            what: format!("creating the ipset {name} with {} entries", entries.len()),
            call: vec![
                Arg::File("--new-ipset-from-file=", file),
                Arg::Lit(format!("--name={name}")),
            ],
            undo: vec![lit(&[format!("--delete-ipset={name}")])],
        });
    }

    fn delete_ipset_step(&self, steps: &mut Steps, family: Family, info: &IpsetInfo) {
        let name = self.ipset_name(family);
        let xml = self.ipset_file(family, &info.options, &info.entries);
        let xml = xml.replacen(
            &format!("type=\"{IPSET_TYPE}\""),
            &format!("type=\"{}\"", text::escape(&info.kind)),
            1,
        );
        let file = steps.file(&format!("{name}.xml"), xml);
        steps.permanent.push(Step {
            layer: Layer::Permanent,
            what: format!("deleting the ipset {name}"),
            call: lit(&[format!("--delete-ipset={name}")]),
            undo: vec![vec![
                Arg::File("--new-ipset-from-file=", file),
                Arg::Lit(format!("--name={name}")),
            ]],
        });
    }

    fn create_policy_step(&self, steps: &mut Steps, kind: Kind, rules: &BTreeSet<Rule>) {
        let name = self.policy_name(kind);
        let xml = policy_xml(
            Self::priority(kind),
            "CONTINUE",
            OWNER_MARK,
            &self.description(Self::policy_description(kind)),
            &["ANY".to_string()],
            &["HOST".to_string()],
            &rules.iter().map(Rule::xml).collect::<String>(),
        );
        let file = steps.file(&format!("{name}.xml"), xml);
        steps.permanent.push(Step {
            layer: Layer::Permanent,
            what: format!("creating the policy {name} with {} rich rules", rules.len()),
            call: vec![
                Arg::File("--new-policy-from-file=", file),
                Arg::Lit(format!("--name={name}")),
            ],
            undo: vec![lit(&[format!("--delete-policy={name}")])],
        });
    }

    fn delete_policy_step(&self, steps: &mut Steps, kind: Kind, info: &PolicyInfo) {
        let name = self.policy_name(kind);
        // Restored as it was: its attributes from the XML, its rules (any text firewalld printed)
        // through --add-rich-rule. Policies with attributes we never set are refused before.
        let xml = policy_xml(
            info.priority,
            &info.target,
            OWNER_MARK,
            &self.description(Self::policy_description(kind)),
            &info.ingress,
            &info.egress,
            "",
        );
        let file = steps.file(&format!("{name}.xml"), xml);
        let mut undo = vec![vec![
            Arg::File("--new-policy-from-file=", file),
            Arg::Lit(format!("--name={name}")),
        ]];
        for rule in &info.rich_rules {
            undo.push(lit(&[
                format!("--policy={name}"),
                format!("--add-rich-rule={rule}"),
            ]));
        }
        steps.permanent.push(Step {
            layer: Layer::Permanent,
            what: format!("deleting the policy {name}"),
            call: lit(&[format!("--delete-policy={name}")]),
            undo,
        });
    }

    /// The entry changes of one ipset in one layer: removals that overlap a new entry first
    /// (firewalld refuses an overlapping add), then the additions, then the other removals.
    fn entry_steps(
        &self,
        steps: &mut Steps,
        layer: Layer,
        family: Family,
        have: &[String],
        want: &[String],
    ) -> Vec<Step> {
        let name = self.ipset_name(family);
        let have_set: BTreeSet<&String> = have.iter().collect();
        let want_set: BTreeSet<&String> = want.iter().collect();
        let add: Vec<String> = want
            .iter()
            .filter(|e| !have_set.contains(e))
            .cloned()
            .collect();
        let remove: Vec<&String> = have.iter().filter(|e| !want_set.contains(e)).collect();
        let add_nets: Vec<IpNet> = add.iter().filter_map(|e| entry_net(e)).collect();
        let (mut first, mut last) = (Vec::new(), Vec::new());
        let parsed: Vec<Option<IpNet>> = remove.iter().map(|e| entry_net(e)).collect();
        let nets: Vec<IpNet> = parsed.iter().flatten().copied().collect();
        let mut hits = overlapping(&nets, &add_nets).into_iter();
        for (entry, net) in remove.iter().zip(&parsed) {
            // An entry we cannot read may overlap anything: it goes first.
            let overlaps = net.is_none() || hits.next().unwrap_or(true);
            if overlaps {
                first.push((*entry).clone());
            } else {
                last.push((*entry).clone());
            }
        }
        let mut out = Vec::new();
        for (entries, adding, when) in [
            (first, false, "that overlap new ones "),
            (add, true, ""),
            (last, false, ""),
        ] {
            if entries.is_empty() {
                continue;
            }
            let file = steps.file(
                &format!(
                    "{}-{name}-{}.txt",
                    if adding { "add" } else { "remove" },
                    layer.name()
                ),
                entries_file(&entries),
            );
            let (op, inverse) = if adding {
                ("--add-entries-from-file=", "--remove-entries-from-file=")
            } else {
                ("--remove-entries-from-file=", "--add-entries-from-file=")
            };
            out.push(Step {
                layer,
                what: format!(
                    "{} {} entr{} {when}{} the {} ipset {name}",
                    if adding { "adding" } else { "removing" },
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" },
                    if adding { "to" } else { "from" },
                    layer.name()
                ),
                call: vec![
                    Arg::Lit(format!("--ipset={name}")),
                    Arg::File(op, file.clone()),
                ],
                undo: vec![vec![
                    Arg::Lit(format!("--ipset={name}")),
                    Arg::File(inverse, file),
                ]],
            });
        }
        out
    }

    /// The rich rule changes of our policies in one layer: the accept policy's new rules first,
    /// then the drop policy's changes, then the accept policy's removals (so Cloudflare never
    /// meets a moment without its accept).
    fn rule_steps(&self, layer: Layer, scan: &LayerScan, want: &Want, skip: &[Kind]) -> Vec<Step> {
        let diff = |kind: Kind| -> (Vec<String>, Vec<String>) {
            let (Some(rules), Some(info)) = (&want.policies[ki(kind)], &scan.policies[ki(kind)])
            else {
                return (vec![], vec![]);
            };
            if skip.contains(&kind) {
                return (vec![], vec![]);
            }
            let have: BTreeSet<&String> = info.rich_rules.iter().collect();
            let texts: Vec<String> = rules.iter().map(Rule::text).collect();
            let want: BTreeSet<&String> = texts.iter().collect();
            (
                texts
                    .iter()
                    .filter(|t| !have.contains(t))
                    .cloned()
                    .collect(),
                info.rich_rules
                    .iter()
                    .filter(|t| !want.contains(t))
                    .cloned()
                    .collect(),
            )
        };
        let step = |kind: Kind, rule: &String, add: bool| {
            let name = self.policy_name(kind);
            let (op, inverse) = if add {
                ("--add-rich-rule=", "--remove-rich-rule=")
            } else {
                ("--remove-rich-rule=", "--add-rich-rule=")
            };
            Step {
                layer,
                what: format!(
                    "{} the rule `{rule}` {} the {} policy {name}",
                    if add { "adding" } else { "removing" },
                    if add { "to" } else { "from" },
                    layer.name()
                ),
                call: lit(&[format!("--policy={name}"), format!("{op}{rule}")]),
                undo: vec![lit(&[
                    format!("--policy={name}"),
                    format!("{inverse}{rule}"),
                ])],
            }
        };
        let (accept_add, accept_remove) = diff(Kind::Accept);
        let (drop_add, drop_remove) = diff(Kind::Drop);
        let mut out = Vec::new();
        out.extend(accept_add.iter().map(|r| step(Kind::Accept, r, true)));
        out.extend(drop_remove.iter().map(|r| step(Kind::Drop, r, false)));
        out.extend(drop_add.iter().map(|r| step(Kind::Drop, r, true)));
        out.extend(accept_remove.iter().map(|r| step(Kind::Accept, r, false)));
        out
    }

    /// Every call that turns `scan` into `want`, after the checks that refuse a plan before
    /// anything changes (read-only calls only).
    fn plan_steps(&self, scan: &Scan, want: &Want) -> Result<Steps, BackendError> {
        let perm = self.object_plan(&scan.permanent, want);
        if let Some((kind, _)) = perm.extras.first() {
            let name = self.policy_name(*kind);
            let extras: Vec<&str> = perm.extras.iter().map(|(_, e)| e.as_str()).collect();
            return Err(BackendError::Conflict(format!(
                "the firewalld policy {name} has {}, which cf-allowlist never sets (from ANY zone \
                 to HOST it opens that to every source); remove it or delete the policy \
                 (`firewall-cmd --permanent --delete-policy={name} && firewall-cmd --reload`) and \
                 sync again; nothing was changed",
                extras.join(", ")
            )));
        }
        let rt = self.object_plan(&scan.runtime, want);
        let reload = perm.changes_objects() || rt.changes_objects() || !rt.extras.is_empty();
        for kind in &perm.delete_policies {
            self.check_owner("policy", &self.policy_name(*kind))?;
        }
        for family in &perm.delete_ipsets {
            self.check_owner("ipset", &self.ipset_name(*family))?;
        }
        self.check_unused(scan, &perm.delete_ipsets)?;

        let mut steps = Steps {
            reload,
            ..Steps::default()
        };
        for kind in &perm.delete_policies {
            let info = scan.permanent.policies[ki(*kind)]
                .as_ref()
                .expect("deleted policies exist");
            self.delete_policy_step(&mut steps, *kind, info);
        }
        for family in &perm.delete_ipsets {
            let info = scan.permanent.ipsets[fi(*family)]
                .as_ref()
                .expect("deleted ipsets exist");
            self.delete_ipset_step(&mut steps, *family, info);
        }
        for family in &perm.create_ipsets {
            let entries = want.ipsets[fi(*family)].as_deref().unwrap_or_default();
            self.create_ipset_step(&mut steps, *family, entries);
        }
        for family in Family::ALL {
            if perm.create_ipsets.contains(&family) {
                continue;
            }
            if let (Some(wanted), Some(info)) =
                (&want.ipsets[fi(family)], &scan.permanent.ipsets[fi(family)])
            {
                let more =
                    self.entry_steps(&mut steps, Layer::Permanent, family, &info.entries, wanted);
                steps.permanent.extend(more);
            }
        }
        for kind in [Kind::Accept, Kind::Drop] {
            if perm.create_policies.contains(&kind) {
                let rules = want.policies[ki(kind)]
                    .as_ref()
                    .expect("created are wanted");
                self.create_policy_step(&mut steps, kind, rules);
            }
        }
        let more = self.rule_steps(
            Layer::Permanent,
            &scan.permanent,
            want,
            &perm.create_policies,
        );
        steps.permanent.extend(more);

        if !reload {
            for family in Family::ALL {
                if let (Some(wanted), Some(info)) =
                    (&want.ipsets[fi(family)], &scan.runtime.ipsets[fi(family)])
                {
                    let more =
                        self.entry_steps(&mut steps, Layer::Runtime, family, &info.entries, wanted);
                    steps.runtime.extend(more);
                }
            }
            let more = self.rule_steps(Layer::Runtime, &scan.runtime, want, &[]);
            steps.runtime.extend(more);
        }
        Ok(steps)
    }

    // ---- executing ----

    fn resolve(call: &Call, dir: &Path) -> Vec<String> {
        call.iter()
            .map(|a| match a {
                Arg::Lit(s) => s.clone(),
                Arg::File(prefix, name) => format!("{prefix}{}", dir.join(name).display()),
            })
            .collect()
    }

    fn run_call(
        &self,
        layer: Layer,
        call: &Call,
        dir: &WorkDir,
        what: &str,
        offline: bool,
    ) -> Result<(), BackendError> {
        let args = Self::resolve(call, &dir.0);
        self.call(Some(layer), &args, offline)
            .map(|_| ())
            .map_err(|e| self.tool_error(what, e))
    }

    fn execute(&self, steps: Steps, want: &Want) -> Result<(), BackendError> {
        if steps.is_empty() {
            return Ok(());
        }
        let dir = WorkDir::create()?;
        for (name, contents) in &steps.files {
            dir.write(name, contents)?;
        }
        let mut done: Vec<&Step> = Vec::new();
        for step in &steps.permanent {
            if let Err(e) = self.run_call(step.layer, &step.call, &dir, &step.what, false) {
                return Err(self.undo(&done, e, &dir, false));
            }
            done.push(step);
        }
        if steps.reload {
            return self.reload(&done, want, &dir);
        }
        for step in &steps.runtime {
            if let Err(e) = self.run_call(step.layer, &step.call, &dir, &step.what, false) {
                return Err(self.undo(&done, e, &dir, false));
            }
            done.push(step);
        }
        tracing::info!(
            permanent = steps.permanent.len(),
            runtime = steps.runtime.len(),
            "firewalld updated without a reload"
        );
        Ok(())
    }

    /// Undoes `done` in reverse; the permanent steps through `firewall-offline-cmd` with
    /// `offline`. Returns `cause`, noting the undo, or both errors when an undo fails.
    fn undo(
        &self,
        done: &[&Step],
        cause: BackendError,
        dir: &WorkDir,
        offline: bool,
    ) -> BackendError {
        match self.undo_steps(done, dir, offline) {
            Ok(0) => cause,
            Ok(n) => {
                tracing::warn!(undone = n, "firewalld change failed; applied steps undone");
                annotate(
                    cause,
                    &format!("the {n} step(s) already applied were undone"),
                )
            }
            Err(undo) => BackendError::undo_failed(cause, undo),
        }
    }

    fn undo_steps(
        &self,
        done: &[&Step],
        dir: &WorkDir,
        offline: bool,
    ) -> Result<usize, BackendError> {
        for step in done.iter().rev() {
            for call in &step.undo {
                let use_offline = offline && step.layer == Layer::Permanent;
                self.run_call(
                    step.layer,
                    call,
                    dir,
                    &format!("undoing: {}", step.what),
                    use_offline,
                )?;
            }
        }
        Ok(done.len())
    }

    /// Makes the runtime follow the permanent configuration, after checking that it is what was
    /// asked; recovers the previous configuration when the reload fails.
    fn reload(&self, done: &[&Step], want: &Want, dir: &WorkDir) -> Result<(), BackendError> {
        // A reload of a configuration firewalld cannot load leaves it FAILED with no rules: read
        // our objects back first.
        // The files are what the reload loads, so they are read (offline), not firewalld's
        // copy in memory, which misses hand edits.
        let checked = self.scan_layer(Layer::Permanent, true).and_then(|perm| {
            let problems = self.layer_problems(Layer::Permanent, &perm, want, true);
            if !problems.is_empty() {
                return Err(BackendError::Verify(format!(
                    "before reloading firewalld, its permanent configuration is not what was \
                     asked: {}",
                    problems.join("; ")
                )));
            }
            self.check_ipset_uses(&perm)?;
            self.call_ok(
                None,
                &["--check-config".into()],
                "checking firewalld's permanent configuration (firewall-cmd --check-config)",
            )
            .map(|_| ())
        });
        if let Err(e) = checked {
            return Err(self.undo(done, e, dir, false));
        }
        tracing::warn!(
            "reloading firewalld (cf-allowlist's objects were created or removed in its permanent \
             configuration): runtime-only firewalld changes are dropped"
        );
        let reloaded = self
            .call_ok(
                None,
                &["--reload".into()],
                "reloading firewalld (firewall-cmd --reload)",
            )
            .and_then(|_| self.require_running());
        match reloaded {
            Ok(()) => Ok(()),
            Err(cause) => Err(self.recover(done, cause, dir)),
        }
    }

    /// After a failed reload: undo the permanent changes (offline while firewalld is FAILED, as
    /// it then refuses permanent changes) and reload the previous configuration.
    fn recover(&self, done: &[&Step], cause: BackendError, dir: &WorkDir) -> BackendError {
        let failed = matches!(
            status_with(&self.runner, &self.options.command),
            Status::Failed
        );
        // firewall-offline-cmd writes a copy of the default zone into the zones directory when it
        // changes a policy (firewalld 1.3): a file that was not there before is removed again.
        let zones = self.options.config_dir.join("zones");
        let zone_files = || -> BTreeSet<PathBuf> {
            fs::read_dir(&zones)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let before = zone_files();
        let undone = self.undo_steps(done, dir, failed);
        if failed {
            for stray in zone_files().difference(&before) {
                tracing::debug!(file = %stray.display(), "removing firewall-offline-cmd's copy of a zone");
                let _ = fs::remove_file(stray);
            }
        }
        let undone = undone.and_then(|_| {
            self.call_ok(
                None,
                &["--reload".into()],
                "reloading firewalld's previous configuration",
            )?;
            self.require_running()
        });
        match undone {
            Ok(()) => annotate(
                cause,
                &format!(
                    "the {} permanent change(s) were undone and firewalld reloaded its previous \
                     configuration",
                    done.len()
                ),
            ),
            Err(undo) => BackendError::undo_failed(cause, undo),
        }
    }
}

/// Adds the entries firewalld reports to a list, read as the kernel reads them.
trait ExtendFamily {
    fn extend_family(&mut self, family: Family, entries: &[String]);
}

impl ExtendFamily for AllowList {
    fn extend_family(&mut self, family: Family, entries: &[String]) {
        for net in entries.iter().filter_map(|e| entry_net(e)) {
            if Family::of(&net) == family {
                self.insert(net);
            }
        }
    }
}

impl Backend for FirewalldBackend {
    fn name(&self) -> &'static str {
        "firewalld"
    }

    fn read(&self) -> Result<Live, BackendError> {
        let scan = self.scan()?;
        self.live_from(&scan)
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan()?;
        let want = self.want(Some(&plan.after))?;
        self.plan_steps(&scan, &want).map(|_| ())
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let scan = self.scan()?;
        let want = self.want(Some(&plan.after))?;
        let steps = self.plan_steps(&scan, &want)?;
        self.execute(steps, &want)
    }

    fn purge(&self) -> Result<(), BackendError> {
        let scan = self.scan()?;
        if !scan.permanent.present() && !scan.runtime.present() {
            return Ok(());
        }
        let want = Want::nothing();
        let steps = self.plan_steps(&scan, &want)?;
        self.execute(steps, &want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::Protocol;
    use proptest::prelude::*;

    fn backend(spec: RuleSpec) -> FirewalldBackend {
        // A runner on a namespace that does not exist: a test that reached firewall-cmd would
        // fail instead of asking the host.
        FirewalldBackend::new(
            FirewalldOptions::default(),
            spec,
            Runner::in_netns("cfa-no-such-namespace"),
        )
        .unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn ipset(name: &str, family: Family, entries: &[&str]) -> IpsetInfo {
        IpsetInfo {
            name: name.into(),
            kind: IPSET_TYPE.into(),
            options: vec![FirewalldBackend::family_option(family).into()],
            entries: strings(entries),
        }
    }

    fn policy(b: &FirewalldBackend, kind: Kind) -> PolicyInfo {
        PolicyInfo {
            name: b.policy_name(kind),
            priority: FirewalldBackend::priority(kind),
            target: "CONTINUE".into(),
            ingress: strings(&["ANY"]),
            egress: strings(&["HOST"]),
            extras: vec![],
            rich_rules: b.rules(kind).iter().map(Rule::text).collect(),
        }
    }

    /// Both layers holding exactly our objects with these entries.
    fn current(b: &FirewalldBackend, v4: &[&str], v6: &[&str]) -> Scan {
        let mut layer = LayerScan {
            ipsets: [
                Some(ipset("cf-allowlist-v4", Family::V4, v4)),
                Some(ipset("cf-allowlist-v6", Family::V6, v6)),
            ],
            ..LayerScan::default()
        };
        layer.policies[0] = Some(policy(b, Kind::Accept));
        if b.spec.restrict {
            layer.policies[1] = Some(policy(b, Kind::Drop));
        }
        Scan {
            permanent: layer.clone(),
            runtime: layer,
        }
    }

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn calls(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let args: Vec<String> = s
                    .call
                    .iter()
                    .map(|a| match a {
                        Arg::Lit(l) => l.clone(),
                        Arg::File(p, f) => format!("{p}<{f}>"),
                    })
                    .collect();
                format!("{}: {}", s.layer.name(), args.join(" "))
            })
            .collect()
    }

    #[test]
    fn our_rules_for_each_family_protocol_and_port() {
        let b = backend(RuleSpec::default());
        let texts: Vec<String> = b.rules(Kind::Accept).iter().map(Rule::text).collect();
        assert_eq!(
            texts,
            [
                "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"80\" protocol=\"tcp\" accept",
                "rule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"443\" protocol=\"tcp\" accept",
                "rule family=\"ipv6\" source ipset=\"cf-allowlist-v6\" port port=\"80\" protocol=\"tcp\" accept",
                "rule family=\"ipv6\" source ipset=\"cf-allowlist-v6\" port port=\"443\" protocol=\"tcp\" accept",
            ]
        );
        let b = backend(RuleSpec {
            ports: vec![],
            protocol: Protocol::Both,
            families: vec![Family::V6],
            ..RuleSpec::default()
        });
        let texts: Vec<String> = b.rules(Kind::Accept).iter().map(Rule::text).collect();
        assert_eq!(
            texts,
            [
                "rule family=\"ipv6\" source ipset=\"cf-allowlist-v6\" protocol value=\"tcp\" accept",
                "rule family=\"ipv6\" source ipset=\"cf-allowlist-v6\" protocol value=\"udp\" accept",
            ]
        );
        let b = backend(RuleSpec {
            restrict: true,
            ports: vec![443],
            families: vec![Family::V4],
            ..RuleSpec::default()
        });
        let texts: Vec<String> = b.rules(Kind::Drop).iter().map(Rule::text).collect();
        assert_eq!(
            texts,
            ["rule family=\"ipv4\" source NOT ipset=\"cf-allowlist-v4\" port port=\"443\" protocol=\"tcp\" drop"]
        );
    }

    #[test]
    fn names_firewalld_would_refuse_are_refused() {
        for ok in ["cf-allowlist", "a", "web_cf-2", "abcdefghijklm"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "abcdefghijklmn",
            "1cf",
            "-cf",
            "cf allow",
            "cf/x",
            "Äpfel",
            "cf.x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(FirewalldBackend::new(
            FirewalldOptions {
                name: "x y".into(),
                ..FirewalldOptions::default()
            },
            RuleSpec::default(),
            Runner::new()
        )
        .is_err());
    }

    #[test]
    fn a_first_sync_creates_every_object_then_reloads() {
        let b = backend(RuleSpec::default());
        let scan = Scan {
            permanent: LayerScan::default(),
            runtime: LayerScan::default(),
        };
        let live = b.live_from(&scan).unwrap();
        assert_eq!(live.structure, Structure::Absent);
        assert!(
            live.warnings[0].contains("takes a `firewall-cmd --reload`"),
            "{:?}",
            live.warnings
        );
        let want = b
            .want(Some(&list(&["173.245.48.0/20", "2400:cb00::/32"])))
            .unwrap();
        let steps = b.plan_steps(&scan, &want).unwrap();
        assert!(steps.reload);
        assert!(steps.runtime.is_empty());
        assert_eq!(
            calls(&steps.permanent),
            [
                "permanent: --new-ipset-from-file=<0/cf-allowlist-v4.xml> --name=cf-allowlist-v4",
                "permanent: --new-ipset-from-file=<1/cf-allowlist-v6.xml> --name=cf-allowlist-v6",
                "permanent: --new-policy-from-file=<2/cf-allowlist.xml> --name=cf-allowlist",
            ]
        );
        assert_eq!(
            steps.files[0].1,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ipset type=\"hash:net\">\n  <short>cf-allowlist</short>\n  <description>Managed by cf-allowlist (the allowlist&apos;s ipv4 ranges). Every sync rewrites it; `cf-allowlist purge` removes it.</description>\n  <option name=\"family\" value=\"inet\"/>\n  <entry>173.245.48.0/20</entry>\n</ipset>\n"
        );
        assert!(steps.files[2]
            .1
            .contains("<policy priority=\"32767\" target=\"CONTINUE\">"));
        assert!(steps.files[2]
            .1
            .contains("<ingress-zone name=\"ANY\"/>\n  <egress-zone name=\"HOST\"/>"));
        // Each creation is undone by deleting what it created.
        assert_eq!(
            steps.permanent[2].undo,
            vec![lit(&["--delete-policy=cf-allowlist".to_string()])]
        );
    }

    #[test]
    fn an_entries_change_touches_both_layers_without_a_reload() {
        let b = backend(RuleSpec::default());
        let scan = current(
            &b,
            &["173.245.48.0/20", "104.16.0.0/13", "104.24.0.0/14"],
            &["2400:cb00::/32"],
        );
        let live = b.live_from(&scan).unwrap();
        assert_eq!(live.structure, Structure::Current);
        assert!(live.warnings.is_empty(), "{:?}", live.warnings);
        let want = b
            .want(Some(&list(&[
                "104.16.0.0/12",
                "198.41.128.0/17",
                "2400:cb00::/32",
            ])))
            .unwrap();
        let steps = b.plan_steps(&scan, &want).unwrap();
        assert!(!steps.reload);
        let expect = |layer: &str, n: usize| {
            vec![
                format!("{layer}: --ipset=cf-allowlist-v4 --remove-entries-from-file=<{}/remove-cf-allowlist-v4-{layer}.txt>", n),
                format!("{layer}: --ipset=cf-allowlist-v4 --add-entries-from-file=<{}/add-cf-allowlist-v4-{layer}.txt>", n + 1),
                format!("{layer}: --ipset=cf-allowlist-v4 --remove-entries-from-file=<{}/remove-cf-allowlist-v4-{layer}.txt>", n + 2),
            ]
        };
        assert_eq!(calls(&steps.permanent), expect("permanent", 0));
        assert_eq!(calls(&steps.runtime), expect("runtime", 3));
        // The overlapping /13 and /14 go first, the unrelated /20 last.
        assert_eq!(steps.files[0].1, "104.16.0.0/13\n104.24.0.0/14\n");
        assert_eq!(steps.files[1].1, "104.16.0.0/12\n198.41.128.0/17\n");
        assert_eq!(steps.files[2].1, "173.245.48.0/20\n");
        // Nothing to do: no step at all.
        let same = b
            .want(Some(&list(&[
                "173.245.48.0/20",
                "104.16.0.0/13",
                "104.24.0.0/14",
                "2400:cb00::/32",
            ])))
            .unwrap();
        assert!(b.plan_steps(&scan, &same).unwrap().is_empty());
    }

    #[test]
    fn rules_change_in_place_and_objects_missing_at_runtime_need_a_reload() {
        let b = backend(RuleSpec::default());
        let mut scan = current(&b, &["173.245.48.0/20"], &[]);
        let other = backend(RuleSpec {
            ports: vec![443, 8443],
            ..RuleSpec::default()
        });
        let want = other.want(Some(&list(&["173.245.48.0/20"]))).unwrap();
        let steps = other.plan_steps(&scan, &want).unwrap();
        assert!(!steps.reload);
        let perm = calls(&steps.permanent);
        assert_eq!(perm.len(), 4, "{perm:#?}");
        assert!(perm[0].contains("--add-rich-rule=") && perm[0].contains("port=\"8443\""));
        assert!(perm[3].contains("--remove-rich-rule=") && perm[3].contains("port=\"80\""));
        assert_eq!(calls(&steps.runtime).len(), 4);

        // The policy exists only in the permanent configuration: a reload makes it live.
        scan.runtime.policies[0] = None;
        let live = b.live_from(&scan).unwrap();
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("runtime: policy cf-allowlist is missing")),
            "{:?}",
            live.structure
        );
        assert!(live.warnings[0].contains("takes a `firewall-cmd --reload`"));
        let want = b.want(Some(&list(&["173.245.48.0/20"]))).unwrap();
        let steps = b.plan_steps(&scan, &want).unwrap();
        assert!(steps.reload && steps.permanent.is_empty() && steps.runtime.is_empty());
    }

    #[test]
    fn attributes_we_never_set_are_refused_permanently_and_reloaded_away_at_runtime() {
        let b = backend(RuleSpec::default());
        let mut scan = current(&b, &["173.245.48.0/20"], &[]);
        let want = b.want(Some(&list(&["173.245.48.0/20"]))).unwrap();
        scan.runtime.policies[0].as_mut().unwrap().extras = strings(&["services: ssh"]);
        let steps = b.plan_steps(&scan, &want).unwrap();
        assert!(steps.reload && steps.permanent.is_empty());
        scan.permanent.policies[0].as_mut().unwrap().extras = strings(&["services: ssh"]);
        let err = b.plan_steps(&scan, &want).unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("has services: ssh") && m.contains("nothing was changed")),
            "{err}"
        );
    }

    #[test]
    fn live_entries_are_both_layers_read_as_the_kernel_reads_them() {
        let b = backend(RuleSpec {
            families: vec![Family::V4],
            ..RuleSpec::default()
        });
        let mut scan = current(&b, &["173.245.48.0/20", "8.8.8.8"], &["2400:cb00::/32"]);
        scan.runtime.ipsets[0]
            .as_mut()
            .unwrap()
            .entries
            .push("192.0.2.0/24".into());
        let live = b.live_from(&scan).unwrap();
        // IPv6 is not managed: its ipset is not counted, and it is outdated.
        assert_eq!(
            live.entries,
            list(&["173.245.48.0/20", "8.8.8.8/32", "192.0.2.0/24"])
        );
        let Structure::Outdated(why) = &live.structure else {
            panic!("{:?}", live.structure)
        };
        assert!(why.contains("permanent: ipset cf-allowlist-v4 has 1 entry cf-allowlist would not write (8.8.8.8)"), "{why}");
        assert!(why.contains("and 4 more"), "{why}");
    }

    #[test]
    fn the_wanted_list_is_checked_against_what_an_ipset_holds() {
        let b = backend(RuleSpec::default());
        let mut overlapping = list(&["104.16.0.0/12"]);
        overlapping.insert("104.16.0.0/13".parse().unwrap());
        let err = b.want(Some(&overlapping)).unwrap_err();
        assert!(
            err.to_string()
                .contains("overlapping ranges 104.16.0.0/13 and 104.16.0.0/12"),
            "{err}"
        );
        let many: AllowList = (0..=MAX_ENTRIES as u32)
            .map(|i| IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + i).into(), 32).unwrap()))
            .collect();
        assert!(b
            .want(Some(&many))
            .unwrap_err()
            .to_string()
            .contains("at most 65536"));
        let restrict_all = backend(RuleSpec {
            restrict: true,
            ports: vec![],
            ..RuleSpec::default()
        });
        assert!(restrict_all.want(None).is_err());
    }

    /// A network of one family (IPv4 in `10.0.0.0/8`), from a start and a prefix.
    fn net(start: u32, prefix: u8) -> IpNet {
        let addr = 0x0a00_0000 | (start & 0x00ff_ffff);
        IpNet::V4(
            ipnet::Ipv4Net::new(addr.into(), prefix.clamp(8, 32))
                .unwrap()
                .trunc(),
        )
    }

    fn no_overlaps(set: &BTreeSet<String>) -> bool {
        let nets: Vec<IpNet> = set.iter().filter_map(|e| entry_net(e)).collect();
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                if a.contains(&b.network()) || b.contains(&a.network()) {
                    return false;
                }
            }
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// `overlapping` agrees with comparing every pair.
        #[test]
        fn overlap_search_matches_brute_force(
            a in prop::collection::vec((any::<u32>(), 8u8..=32), 0..12),
            b in prop::collection::vec((any::<u32>(), 8u8..=32), 0..12),
        ) {
            let a: Vec<IpNet> = a.into_iter().map(|(s, p)| net(s, p)).collect();
            let b: Vec<IpNet> = b.into_iter().map(|(s, p)| net(s, p)).collect();
            let brute: Vec<bool> = a
                .iter()
                .map(|x| b.iter().any(|y| x.contains(&y.network()) || y.contains(&x.network())))
                .collect();
            prop_assert_eq!(overlapping(&a, &b), brute);
        }

        /// Played on a model of firewalld's ipset (an add fails when the set then holds
        /// overlapping entries), the entry steps reach the wanted list without one refusal, and
        /// their undo calls, in reverse, give back the set they started from.
        #[test]
        fn entry_steps_never_overlap_and_undo_exactly(
            have in prop::collection::vec((any::<u32>(), 8u8..=32), 0..10),
            want in prop::collection::vec((any::<u32>(), 8u8..=32), 0..10),
            raw in any::<bool>(),
        ) {
            let mut have_set = BTreeSet::new();
            for (s, p) in have {
                let n = net(s, p);
                // firewalld keeps what it was given: a host may be written without its prefix.
                let text = if raw && n.prefix_len() == 32 { n.addr().to_string() } else { n.to_string() };
                let mut next = have_set.clone();
                next.insert(text);
                if no_overlaps(&next) {
                    have_set = next;
                }
            }
            let want: AllowList = want.into_iter().map(|(s, p)| net(s, p)).collect();
            let want = want.aggregate();
            let have: Vec<String> = have_set.iter().cloned().collect();
            let wanted: Vec<String> = want.strings(Family::V4);
            let b = backend(RuleSpec::default());
            let mut steps = Steps::default();
            let out = b.entry_steps(&mut steps, Layer::Runtime, Family::V4, &have, &wanted);
            let files: std::collections::BTreeMap<String, Vec<String>> = steps
                .files
                .iter()
                .map(|(n, c)| (n.clone(), text::read_entries_file(c)))
                .collect();
            let play = |set: &mut BTreeSet<String>, call: &Call| -> Result<(), String> {
                let Some(Arg::File(op, file)) = call.get(1) else { return Err("no file".into()) };
                let entries = &files[file];
                if *op == "--add-entries-from-file=" {
                    set.extend(entries.iter().cloned());
                    if !no_overlaps(set) {
                        return Err(format!("INVALID_ENTRY adding {entries:?}"));
                    }
                } else {
                    for e in entries {
                        set.remove(e);
                    }
                }
                Ok(())
            };
            let mut model = have_set.clone();
            for step in &out {
                prop_assert!(play(&mut model, &step.call).is_ok(), "{:?}", play(&mut model.clone(), &step.call));
            }
            let wanted_set: BTreeSet<String> = wanted.iter().cloned().collect();
            prop_assert_eq!(&model, &wanted_set);
            for step in out.iter().rev() {
                for call in &step.undo {
                    let r = play(&mut model, call);
                    prop_assert!(r.is_ok(), "{:?}", r);
                }
            }
            prop_assert_eq!(model, have_set);
        }
    }
}
