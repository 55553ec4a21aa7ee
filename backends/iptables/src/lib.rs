//! The iptables backend: chain `CF-ALLOWLIST` in the filter table of IPv4 and IPv6, jumped to
//! from the top of `INPUT`, holding one accept rule per range, or one rule per family matching an
//! ipset (`cf-allowlist-v4` / `cf-allowlist-v6`, `hash:net`) that is swapped atomically.
//!
//! Reads with `iptables-save -t filter` / `ip6tables-save -t filter` (and `ipset save`), applies
//! with one `iptables-restore -w N --noflush` per family that replaces only our chain's contents,
//! checks with the same input and `--test`. An apply is a sequence of steps (one `ipset restore`
//! per family, verified, then one `iptables-restore` per family); when one fails, the steps
//! before it are undone, last first, so that on `Err` the firewall is as it was (or the error is
//! [`BackendError::UndoFailed`]). Only the families of the spec that the host can hold are
//! managed ([`Backend::families`]). Works with iptables-nft and iptables-legacy: the
//! suffixed tools (`iptables-nft-save`, `iptables-legacy-restore`, ...) are chosen by
//! [`Variant`]; `auto` picks the variant holding the host's rules, as kube-proxy's iptables
//! wrapper does.

pub mod rules;
pub mod save;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cfa_core::{AllowList, Backend, BackendError, Family, Live, Plan, RuleSpec, Runner, Structure};
use ipnet::IpNet;

use crate::rules::{InPlace, SetUpdate, Sources};
use crate::save::{IpSet, Table};

/// The chain we own, in the filter table of both families (the default of
/// [`IptablesOptions::chain`]). Compatibility contract: renaming it orphans the chains and jumps
/// written by older versions.
pub const DEFAULT_CHAIN: &str = "CF-ALLOWLIST";

/// The ipset holding the IPv4 ranges (`hash:net family inet`). Compatibility contract.
pub const SET_V4: &str = "cf-allowlist-v4";

/// The ipset holding the IPv6 ranges (`hash:net family inet6`). Compatibility contract.
pub const SET_V6: &str = "cf-allowlist-v6";

/// The temporary IPv4 set filled and swapped in on update; it only exists during an apply
/// (or after an interrupted one, and is then replaced). Compatibility contract.
pub const TMP_SET_V4: &str = "cf-allowlist-v4-tmp";

/// The temporary IPv6 set, like [`TMP_SET_V4`]. Compatibility contract.
pub const TMP_SET_V6: &str = "cf-allowlist-v6-tmp";

/// How long `iptables-restore -w` waits for the xtables lock held by another program.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Whether the allowlist lives in ipsets or in one rule per range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpsetMode {
    /// Use ipset when the `ipset` tool is installed.
    #[default]
    Auto,
    /// Always use ipset; an error when the tool is missing.
    Always,
    /// Never use ipset: one rule per range.
    Never,
}

/// Which iptables implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The one that holds the host's rules (more rules in `*-legacy-save` than in `*-nft-save`
    /// means legacy; a tie means nft).
    #[default]
    Auto,
    /// `iptables-nft` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy` (x_tables kernel API).
    Legacy,
}

impl IpsetMode {
    /// The configuration spelling (`auto`, `always`, `never`).
    pub fn name(self) -> &'static str {
        match self {
            IpsetMode::Auto => "auto",
            IpsetMode::Always => "always",
            IpsetMode::Never => "never",
        }
    }
}

impl fmt::Display for IpsetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IpsetMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IpsetMode::Auto),
            "always" => Ok(IpsetMode::Always),
            "never" => Ok(IpsetMode::Never),
            other => Err(format!(
                "unknown ipset mode `{other}` (expected auto, always or never)"
            )),
        }
    }
}

impl Variant {
    /// The configuration spelling (`auto`, `nft`, `legacy`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Auto => "auto",
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Variant::Auto),
            "nft" => Ok(Variant::Nft),
            "legacy" => Ok(Variant::Legacy),
            other => Err(format!(
                "unknown iptables variant `{other}` (expected auto, nft or legacy)"
            )),
        }
    }
}

/// The `iptables:` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesOptions {
    /// Our chain's name; default [`DEFAULT_CHAIN`].
    pub chain: String,
    /// ipset use; default `Auto`.
    pub ipset: IpsetMode,
    /// iptables implementation; default `Auto`.
    pub variant: Variant,
}

impl Default for IptablesOptions {
    fn default() -> Self {
        IptablesOptions {
            chain: DEFAULT_CHAIN.to_string(),
            ipset: IpsetMode::Auto,
            variant: Variant::Auto,
        }
    }
}

/// The tool set actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tools {
    /// `iptables-nft-save`, `iptables-nft-restore`, ...
    Nft,
    /// `iptables-legacy-save`, `iptables-legacy-restore`, ...
    Legacy,
    /// The unsuffixed `iptables-save`, ... (old distributions ship only those).
    Plain,
}

impl Tools {
    fn prefix(family: Family) -> &'static str {
        match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Tools::Nft => "-nft",
            Tools::Legacy => "-legacy",
            Tools::Plain => "",
        }
    }

    /// The `*-save` program for `family`.
    pub fn save(self, family: Family) -> String {
        format!("{}{}-save", Self::prefix(family), self.suffix())
    }

    /// The `*-restore` program for `family`.
    pub fn restore(self, family: Family) -> String {
        format!("{}{}-restore", Self::prefix(family), self.suffix())
    }
}

impl fmt::Display for Tools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tools::Nft => "nft",
            Tools::Legacy => "legacy",
            Tools::Plain => "unsuffixed",
        })
    }
}

/// The iptables backend. See the crate documentation.
#[derive(Debug, Clone)]
pub struct IptablesBackend {
    chain: String,
    spec: RuleSpec,
    runner: Runner,
    tools: Tools,
    ipset: bool,
    lock_wait: Duration,
    /// Programs run from an explicit path instead of being looked up (see
    /// [`IptablesBackend::with_tool_override`]).
    overrides: Vec<(String, String)>,
}

/// What we found of our objects in one family.
#[derive(Debug, Clone)]
struct FamilyState {
    family: Family,
    chain_exists: bool,
    /// Our chain's rules as saved (`-A CHAIN ...`).
    chain_rules: Vec<String>,
    /// `INPUT` rules jumping to our chain, as saved.
    jumps: Vec<String>,
    /// Whether the first `INPUT` rule is our jump.
    jump_first: bool,
    /// Rules of other chains than `INPUT` that send packets to our chain.
    foreign_refs: Vec<String>,
    /// Our set, when ipset was consulted and it exists.
    set: Option<IpSet>,
    /// Whether a temporary set was left behind.
    tmp_exists: bool,
    /// Whether iptables-nft reported base chains it cannot show.
    hidden_base_chains: bool,
}

impl FamilyState {
    fn exists(&self) -> bool {
        self.chain_exists || !self.jumps.is_empty() || self.set.is_some() || self.tmp_exists
    }
}

/// Our sets as `ipset` lists them.
struct LiveSets {
    /// Which of our set names (real and temporary) exist.
    present: Vec<String>,
    /// The real sets that exist (of the families asked for), parsed.
    sets: Vec<(String, IpSet)>,
}

impl LiveSets {
    /// A family's real set, if it exists, and whether its temporary set exists.
    fn of(&self, family: Family) -> (Option<&IpSet>, bool) {
        let (set, tmp) = set_names(family);
        (
            self.sets.iter().find(|(n, _)| n == set).map(|(_, s)| s),
            self.present.iter().any(|p| p == tmp),
        )
    }
}

/// One step of an apply, kept so that a later failure can undo it.
enum Step<'a> {
    /// A family's set swap (complete or not: a failed `ipset restore` keeps the lines before
    /// the failing one), with what the real set held before (`None`: it did not exist).
    Set(&'a SetUpdate<'a>, Option<&'a IpSet>),
    /// A family's rules, with the state they replaced (an `iptables-restore` is atomic per
    /// family, so only a successful one is a step).
    Rules(&'a FamilyState),
}

/// Members sorted and without duplicates, for comparing sets.
/// The in-place difference that takes `live` (one of our sets, checked to fit) to `wanted`
/// (sorted), when that is cheaper than filling a new set and swapping it in (fewer changes than
/// members) and the set can hold the new list (its `maxelem`, 65,536 when unset).
fn in_place(live: &IpSet, wanted: &[IpNet]) -> Option<InPlace> {
    let maxelem = live
        .create
        .iter()
        .position(|w| w == "maxelem")
        .and_then(|i| live.create.get(i + 1))
        .map_or(Some(65_536), |n| n.parse::<usize>().ok())?;
    let have = normalized(&live.entries);
    let add: Vec<IpNet> = wanted
        .iter()
        .filter(|n| have.binary_search(n).is_err())
        .copied()
        .collect();
    let del: Vec<IpNet> = have
        .iter()
        .filter(|n| wanted.binary_search(n).is_err())
        .copied()
        .collect();
    // Past `maxelem` an `add` fails with the set full; the additions come before the deletions.
    let peak = have.len() + add.len();
    (add.len() + del.len() < wanted.len() && peak <= maxelem).then_some(InPlace { add, del })
}

fn normalized(entries: &[IpNet]) -> Vec<IpNet> {
    let mut v = entries.to_vec();
    v.sort();
    v.dedup();
    v
}

fn set_names(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::V4 => (SET_V4, TMP_SET_V4),
        Family::V6 => (SET_V6, TMP_SET_V6),
    }
}

/// The longest chain name iptables accepts (`XT_EXTENSION_MAXNAMELEN` minus the NUL byte).
pub const CHAIN_NAME_MAX: usize = 28;

/// Built-in chains a chain of ours must not be named after: declaring one in our restore input
/// would flush the host's own chain.
const BUILTIN_CHAINS: &[&str] = &["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// Targets a chain of ours must not be named after: `-j NAME` calls a built-in verdict or a
/// target extension before it looks for a chain of that name, so our jump would do something
/// else (`LOG`, `MARK`, ...) and our rules would never be reached. The verdicts, the internal
/// `ERROR` target, and the target extensions iptables 1.8 ships (`libxt_*`, `libipt_*`,
/// `libip6t_*` with an upper-case name).
const RESERVED_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "ERROR",
    "AUDIT",
    "CHECKSUM",
    "CLASSIFY",
    "CLUSTERIP",
    "CONNMARK",
    "CONNSECMARK",
    "CT",
    "DNAT",
    "DNPT",
    "DSCP",
    "ECN",
    "HL",
    "HMARK",
    "IDLETIMER",
    "LED",
    "LOG",
    "MARK",
    "MASQUERADE",
    "NAT",
    "NETMAP",
    "NFLOG",
    "NFQUEUE",
    "NOTRACK",
    "RATEEST",
    "REDIRECT",
    "REJECT",
    "SECMARK",
    "SET",
    "SNAT",
    "SNPT",
    "SYNPROXY",
    "TCPMSS",
    "TCPOPTSTRIP",
    "TEE",
    "TOS",
    "TPROXY",
    "TRACE",
    "TTL",
    "ULOG",
];

/// Checks an `iptables.chain` value: 1 to [`CHAIN_NAME_MAX`] ASCII letters, digits, `-` or `_`,
/// not starting with `-` or `!` (iptables would read an option or a negation), not a built-in
/// chain (`INPUT`, ...) nor a target (`ACCEPT`, `DROP`, `LOG`, ...). The message names the value
/// and the rule it breaks; the engine's configuration check reports it (exit 78).
pub fn validate_chain_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > CHAIN_NAME_MAX {
        Some(format!(
            "it is {} bytes long, iptables allows at most {CHAIN_NAME_MAX}",
            name.len()
        ))
    } else if name.starts_with('-') {
        Some("it starts with `-`, which iptables reads as an option".to_string())
    } else if name.starts_with('!') {
        Some("it starts with `!`, which iptables reads as a negation".to_string())
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(format!(
            "it contains {bad:?}; only ASCII letters, digits, `-` and `_` are allowed"
        ))
    } else if BUILTIN_CHAINS.contains(&name) {
        Some("it is a built-in chain of the filter table".to_string())
    } else if RESERVED_TARGETS.contains(&name) {
        Some(format!(
            "it is an iptables target: `-j {name}` would call the target, not our chain"
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "iptables chain name `{}` is not usable: {why}",
            name.escape_debug()
        )),
    }
}

fn validate_chain(name: &str) -> Result<(), BackendError> {
    validate_chain_name(name).map_err(BackendError::Conflict)
}

/// Exists when the kernel has IPv6 (the module is loaded and not disabled with
/// `ipv6.disable=1`). Without it there can be no ip6tables rules to manage.
const KERNEL_IPV6: &str = "/proc/net/if_inet6";

/// Counts the rules (`-A` lines) the `*-save` tools of a variant report, both families.
fn count_rules(runner: &Runner, tools: Tools) -> Option<usize> {
    let mut total = None;
    for family in Family::ALL {
        if let Ok(out) = runner.run(&tools.save(family), &[] as &[&str], None) {
            let n = out
                .stdout
                .lines()
                .filter(|l| l.starts_with("-A") || (l.starts_with('[') && l.contains("] -A")))
                .count();
            *total.get_or_insert(0) += n;
        }
    }
    total
}

/// Picks the tools for `variant`. `Auto` counts each variant's rules as kube-proxy's iptables
/// wrapper does: more legacy rules than nft rules means legacy, otherwise nft.
fn pick_tools(runner: &Runner, variant: Variant) -> Result<Tools, BackendError> {
    let tools = match variant {
        Variant::Nft => Tools::Nft,
        Variant::Legacy => Tools::Legacy,
        Variant::Auto => {
            let has_nft = runner.has(&Tools::Nft.save(Family::V4));
            let has_legacy = runner.has(&Tools::Legacy.save(Family::V4));
            let chosen = match (has_nft, has_legacy) {
                (true, true) => {
                    let nft = count_rules(runner, Tools::Nft).unwrap_or(0);
                    let legacy = count_rules(runner, Tools::Legacy).unwrap_or(0);
                    let chosen = if legacy > nft {
                        Tools::Legacy
                    } else {
                        Tools::Nft
                    };
                    tracing::info!(
                        nft_rules = nft,
                        legacy_rules = legacy,
                        "iptables variant: {chosen} (nft holds {nft} rules, legacy {legacy})"
                    );
                    return Ok(chosen);
                }
                (true, false) => Tools::Nft,
                (false, true) => Tools::Legacy,
                (false, false) => Tools::Plain,
            };
            tracing::info!("iptables variant: {chosen} (the only one installed)");
            chosen
        }
    };
    if !runner.has(&tools.save(Family::V4)) || !runner.has(&tools.restore(Family::V4)) {
        return Err(BackendError::Conflict(format!(
            "iptables backend: `{}` / `{}` not found (variant {tools}); install iptables",
            tools.save(Family::V4),
            tools.restore(Family::V4)
        )));
    }
    Ok(tools)
}

/// Whether the host's iptables filter `INPUT` chain holds any rule, in either variant or
/// family (for the engine's `backend: auto`). Tools that are missing or fail count as "no".
pub fn input_has_rules(runner: &Runner) -> bool {
    [Tools::Nft, Tools::Legacy, Tools::Plain]
        .into_iter()
        .flat_map(|tools| Family::ALL.map(move |family| tools.save(family)))
        .filter(|program| runner.has(program))
        .any(|program| {
            runner
                // No `-t filter`: naming a table makes iptables-legacy load its kernel module.
                .run(&program, &[] as &[&str], None)
                .ok()
                .and_then(|out| save::parse_save(&out.stdout, "filter", &program).ok())
                .is_some_and(|table| table.rules_of("INPUT").next().is_some())
        })
}

impl IptablesBackend {
    /// Makes the backend: validates the chain name, resolves the ipset mode and picks the
    /// iptables variant (logged). Fails when a tool it needs is missing.
    pub fn new(
        options: IptablesOptions,
        spec: RuleSpec,
        runner: Runner,
    ) -> Result<Self, BackendError> {
        validate_chain(&options.chain)?;
        let has_ipset = runner.has("ipset");
        let ipset = match options.ipset {
            IpsetMode::Auto => has_ipset,
            IpsetMode::Never => false,
            IpsetMode::Always if has_ipset => true,
            IpsetMode::Always => {
                return Err(BackendError::Conflict(
                    "iptables backend: `ipset: always` but the ipset tool is not installed".into(),
                ))
            }
        };
        let tools = pick_tools(&runner, options.variant)?;
        Ok(IptablesBackend {
            chain: options.chain,
            spec,
            runner,
            tools,
            ipset,
            lock_wait: DEFAULT_LOCK_WAIT,
            overrides: Vec::new(),
        })
    }

    /// Runs the executable at `path` wherever the backend would run `program` (`ipset`,
    /// `ip6tables-nft-restore`, ...), including the "is it installed" checks made after this
    /// call. For tests, which inject failing tools this way: changing `PATH` would affect every
    /// test thread of the process.
    pub fn with_tool_override(mut self, program: &str, path: impl Into<String>) -> Self {
        self.overrides.retain(|(p, _)| p != program);
        self.overrides.push((program.to_string(), path.into()));
        self
    }

    /// The program to run for `program`: its override, or the name to look up.
    fn tool(&self, program: &str) -> String {
        self.overrides
            .iter()
            .find(|(p, _)| p == program)
            .map_or_else(|| program.to_string(), |(_, path)| path.clone())
    }

    /// Sets how long `iptables-restore` waits for the xtables lock (default
    /// [`DEFAULT_LOCK_WAIT`]; whole seconds, at least one).
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait.max(Duration::from_secs(1));
        self
    }

    /// The tools in use (the variant picked).
    pub fn tools(&self) -> Tools {
        self.tools
    }

    /// Whether the ranges live in ipsets.
    pub fn uses_ipset(&self) -> bool {
        self.ipset
    }

    /// The rules our chain must hold for `entries` of `family` under this backend's spec.
    fn wanted_rules(&self, family: Family, entries: &[IpNet]) -> Vec<String> {
        let sources = if self.ipset {
            Sources::Set(set_names(family).0)
        } else {
            Sources::Ranges(entries)
        };
        rules::chain_rules(&self.chain, &self.spec, sources)
    }

    /// The families this backend manages here: those the spec asks for that this host can hold,
    /// and for each one left out, a warning saying why.
    fn held_families(&self) -> (Vec<Family>, Vec<String>) {
        let mut held = Vec::new();
        let mut left_out = Vec::new();
        for family in Family::ALL.into_iter().filter(|f| self.spec.manages(*f)) {
            match self.unusable(family) {
                None => held.push(family),
                Some(why) => left_out.push(format!("{family} ranges are not managed: {why}")),
            }
        }
        (held, left_out)
    }

    /// Why this host cannot hold `family`'s rules, or `None`.
    fn unusable(&self, family: Family) -> Option<String> {
        if family == Family::V6 && !std::path::Path::new(KERNEL_IPV6).exists() {
            return Some(format!(
                "the kernel has no IPv6 ({KERNEL_IPV6} is missing), so there are no ip6tables"
            ));
        }
        [self.tools.save(family), self.tools.restore(family)]
            .into_iter()
            .map(|program| self.tool(&program))
            .find(|program| !self.runner.has(program))
            .map(|program| format!("`{program}` is not installed"))
    }

    /// Reads which of our sets exist, and the real sets of `families`, when ipset is installed;
    /// `None` when it is not.
    fn read_sets(&self, families: &[Family]) -> Result<Option<LiveSets>, BackendError> {
        let ipset = self.tool("ipset");
        if !self.runner.has(&ipset) {
            return Ok(None);
        }
        let names = self
            .runner
            .run(&ipset, &["list", "-n"], None)
            .map_err(|e| BackendError::command("listing ipsets (ipset list -n)", e))?
            .stdout;
        let present = save::parse_ipset_names(&names, &[SET_V4, SET_V6, TMP_SET_V4, TMP_SET_V6]);
        let mut sets = Vec::new();
        for name in families.iter().map(|f| set_names(*f).0) {
            if !present.iter().any(|p| p == name) {
                continue;
            }
            let what = format!("ipset save {name}");
            let out = self
                .runner
                .run(&ipset, &["save", name], None)
                .map_err(|e| BackendError::command(format!("reading set {name}"), e))?;
            if let Some(set) = save::parse_ipset_save(&out.stdout, &[name], &what)?.remove(name) {
                sets.push((name.to_string(), set));
            }
        }
        Ok(Some(LiveSets { present, sets }))
    }

    /// [`Self::read_sets`] for one family, when undoing or verifying a set step (ipset is in use,
    /// so it is installed).
    fn family_sets(&self, family: Family) -> Result<LiveSets, BackendError> {
        self.read_sets(&[family])?.ok_or_else(|| {
            BackendError::Conflict(format!(
                "the ipset tool (`{}`) is no longer installed",
                self.tool("ipset")
            ))
        })
    }

    fn read_table(&self, family: Family) -> Result<Table, BackendError> {
        let program = self.tool(&self.tools.save(family));
        let out = self
            .runner
            .run(&program, &["-t", "filter"], None)
            .map_err(|e| BackendError::command(format!("reading the {family} filter table"), e))?;
        save::parse_save(&out.stdout, "filter", &format!("{program} -t filter"))
    }

    /// Reads our objects in `families`.
    fn inspect(&self, families: &[Family]) -> Result<Vec<FamilyState>, BackendError> {
        let sets = self.read_sets(families)?;
        families
            .iter()
            .map(|&family| {
                let table = self.read_table(family)?;
                let (set, tmp_exists) = match &sets {
                    Some(live) => {
                        let (set, tmp) = live.of(family);
                        (set.cloned(), tmp)
                    }
                    None => (None, false),
                };
                let input: Vec<_> = table.rules_of("INPUT").collect();
                let targets_us = |r: &save::Rule| r.target() == Some(self.chain.as_str());
                let jumps: Vec<String> = input
                    .iter()
                    .filter(|r| targets_us(r))
                    .map(|r| r.text.clone())
                    .collect();
                let jump_first = input.first().is_some_and(|r| targets_us(r));
                let foreign_refs = table
                    .rules
                    .iter()
                    .filter(|r| r.chain != "INPUT" && r.chain != self.chain)
                    .filter(|r| targets_us(r))
                    .map(|r| r.text.clone())
                    .collect();
                Ok(FamilyState {
                    family,
                    chain_exists: table.has_chain(&self.chain),
                    chain_rules: table
                        .rules_of(&self.chain)
                        .map(|r| r.text.clone())
                        .collect(),
                    jumps,
                    jump_first,
                    foreign_refs,
                    set,
                    tmp_exists,
                    hidden_base_chains: table.hidden_base_chains,
                })
            })
            .collect()
    }

    /// The entries a family's objects hold: the set's members with ipset, otherwise the sources
    /// of the accept rules in our chain.
    fn entries_of(&self, state: &FamilyState) -> Vec<IpNet> {
        if self.ipset {
            return state
                .set
                .as_ref()
                .map(|s| s.entries.clone())
                .unwrap_or_default();
        }
        save::accepted_sources(&state.chain_rules, state.family)
    }

    /// Why a family's objects are not what this spec builds for `entries`, or `None`.
    fn outdated(&self, state: &FamilyState, entries: &[IpNet]) -> Option<String> {
        // A temporary set left by an interrupted apply is harmless, but only an apply removes
        // it (its set update): outdated, so that the next run does.
        if self.ipset && state.tmp_exists {
            return Some(format!(
                "{}: temporary ipset {} is left from an interrupted run",
                state.family,
                set_names(state.family).1
            ));
        }
        self.rules_outdated(state, entries)
    }

    /// Why a family's set, chain or jump are not what this spec builds for `entries` (so that
    /// its rules must be written), or `None`.
    fn rules_outdated(&self, state: &FamilyState, entries: &[IpNet]) -> Option<String> {
        let family = state.family;
        let chain = &self.chain;
        if self.ipset {
            let (name, _) = set_names(family);
            match &state.set {
                None => return Some(format!("{family}: ipset {name} is missing")),
                Some(set) if !set.fits(family) => {
                    return Some(format!(
                        "{family}: ipset {name} is `{}`, want hash:net family {}",
                        set.create.join(" "),
                        save::ipset_family(family)
                    ))
                }
                Some(_) => {}
            }
        }
        if !state.chain_exists {
            return Some(format!("{family}: chain {chain} is missing"));
        }
        if state.jumps.is_empty() {
            return Some(format!("{family}: the INPUT jump to {chain} is missing"));
        }
        let jump = rules::jump_rule(chain);
        if state.jumps.len() > 1 || state.jumps[0] != jump {
            return Some(format!(
                "{family}: INPUT holds {} jump(s) to {chain}, want exactly `{jump}`",
                state.jumps.len()
            ));
        }
        if state.chain_rules != self.wanted_rules(family, entries) {
            return Some(format!(
                "{family}: the rules in chain {chain} are not what this configuration generates \
                 (ports, protocol, restrict or ipset changed)"
            ));
        }
        None
    }

    fn restore_args(&self, test: bool) -> Vec<String> {
        let mut args = vec![
            "-w".to_string(),
            self.lock_wait.as_secs().max(1).to_string(),
            "--noflush".to_string(),
        ];
        if test {
            args.push("--test".to_string());
        }
        args
    }

    fn run_restore(
        &self,
        family: Family,
        input: &str,
        test: bool,
        doing: &str,
    ) -> Result<(), BackendError> {
        let program = self.tool(&self.tools.restore(family));
        self.runner
            .run(&program, &self.restore_args(test), Some(input))
            .map(|_| ())
            .map_err(|e| {
                let locked = e.stderr().is_some_and(|s| s.contains("xtables lock"));
                let action = if locked {
                    format!(
                        "{doing} ({family}, chain {}): another program held the xtables lock \
                         for more than {}s; nothing was changed by this step, try again",
                        self.chain,
                        self.lock_wait.as_secs()
                    )
                } else {
                    format!("{doing} ({family}, chain {})", self.chain)
                };
                BackendError::command(action, e)
            })
    }

    fn run_ipset(&self, input: &str, doing: &str) -> Result<(), BackendError> {
        self.runner
            .run(&self.tool("ipset"), &["restore"], Some(input))
            .map(|_| ())
            .map_err(|e| BackendError::command(doing, e))
    }

    /// What `apply` (and `check`) do for one family: the iptables-restore input, when the chain
    /// or jump must change.
    fn family_input(&self, state: &FamilyState, wanted: &[IpNet]) -> Option<String> {
        self.rules_outdated(state, wanted)?;
        let jump = rules::jump_rule(&self.chain);
        let keep_jump = state.jumps.contains(&jump);
        let mut delete: Vec<String> = state.jumps.clone();
        if keep_jump {
            let first = delete.iter().position(|j| *j == jump).expect("present");
            delete.remove(first);
        }
        Some(rules::restore_input(
            &self.chain,
            &self.wanted_rules(state.family, wanted),
            !keep_jump,
            &delete,
        ))
    }

    fn set_updates<'a>(
        &self,
        states: &'a [FamilyState],
        wanted: &'a [(Family, Vec<IpNet>)],
    ) -> Result<Vec<SetUpdate<'a>>, BackendError> {
        let mut updates = Vec::new();
        if !self.ipset {
            return Ok(updates);
        }
        for (state, (family, entries)) in states.iter().zip(wanted) {
            let (set, tmp) = set_names(*family);
            if let Some(live) = &state.set {
                if !live.fits(*family) {
                    return Err(BackendError::Conflict(format!(
                        "ipset {set} exists as `{}`, not hash:net family {}: it cannot be \
                         swapped; remove it (cf-allowlist purge) and sync again",
                        live.create.join(" "),
                        save::ipset_family(*family)
                    )));
                }
                let mut have = live.entries.clone();
                have.sort();
                have.dedup();
                if have == *entries && !state.tmp_exists {
                    continue;
                }
            }
            let in_place = state
                .set
                .as_ref()
                .filter(|_| !state.tmp_exists)
                .and_then(|live| in_place(live, entries));
            if let Some(bad) = entries.iter().find(|n| n.prefix_len() == 0) {
                return Err(BackendError::Conflict(format!(
                    "ipset {set} (hash:net) cannot hold {bad}: a zero-length prefix; use \
                     `ipset: never` to allow everyone"
                )));
            }
            updates.push(SetUpdate {
                family: *family,
                set,
                tmp,
                exists: state.set.is_some(),
                stale_tmp: state.tmp_exists,
                entries,
                in_place,
            });
        }
        Ok(updates)
    }

    /// Puts a family's chain and jumps back as `state` found them (after a later step failed).
    /// Extra jumps the failed apply deleted (duplicates, non-canonical ones) are not re-added:
    /// they only repeated the canonical jump.
    fn undo_family(&self, state: &FamilyState) -> Result<(), BackendError> {
        let jump = rules::jump_rule(&self.chain);
        let input = if !state.chain_exists {
            rules::purge_input(&self.chain, &[jump], true)
        } else {
            let added: Vec<String> = if state.jumps.contains(&jump) {
                Vec::new()
            } else {
                vec![jump]
            };
            rules::restore_input(&self.chain, &state.chain_rules, false, &added)
        };
        self.run_restore(state.family, &input, false, "rolling back")
    }

    /// One family's set step: fills the temporary set and swaps it in, in one `ipset restore`,
    /// then reads the sets back. Verified because the undo relies on it: the real set must hold
    /// the new members and the temporary set the old ones. A set changed in place is not read
    /// back here: its undo reads the set itself and puts back the difference, and after the
    /// apply the engine reads everything back (reading a 50,000-member set costs ~60 ms).
    fn swap_set(&self, update: &SetUpdate<'_>) -> Result<(), BackendError> {
        self.run_ipset(
            &rules::ipset_swap_input(std::slice::from_ref(update)),
            &if update.in_place.is_some() {
                format!("updating ipset {} in place (ipset restore)", update.set)
            } else {
                format!(
                    "swapping the new members into ipset {} (ipset restore)",
                    update.set
                )
            },
        )?;
        if update.in_place.is_some() {
            return Ok(());
        }
        let live = self.family_sets(update.family)?;
        let (set, tmp) = live.of(update.family);
        let want = normalized(update.entries);
        match set {
            Some(s) if normalized(&s.entries) == want && tmp => Ok(()),
            Some(s) if tmp => Err(BackendError::Verify(format!(
                "ipset {} holds {} members after its swap, want the {} new ones",
                update.set,
                s.entries.len(),
                want.len()
            ))),
            Some(_) => Err(BackendError::Verify(format!(
                "temporary ipset {} (the old members) is missing after the swap into {}",
                update.tmp, update.set
            ))),
            None => Err(BackendError::Verify(format!(
                "ipset {} is missing after `ipset restore` created it",
                update.set
            ))),
        }
    }

    /// Puts a family's sets back as they were before [`Self::swap_set`] ran, completely or in
    /// part (`old`: what the real set held; `None`: it did not exist), then checks that they
    /// are: the real set as before, no temporary set.
    fn undo_set(&self, update: &SetUpdate<'_>, old: Option<&IpSet>) -> Result<(), BackendError> {
        let family = update.family;
        let live = self.family_sets(family)?;
        let (now, tmp) = live.of(family);
        let input = rules::undo_set_input(update, old, now, tmp).map_err(|why| {
            BackendError::Conflict(format!(
                "cannot restore the previous members of ipset {}: {why}",
                update.set
            ))
        })?;
        if !input.is_empty() {
            self.run_ipset(
                &input,
                &format!(
                    "restoring the previous members of ipset {} (ipset restore)",
                    update.set
                ),
            )?;
        }
        let old = old.map(|s| normalized(&s.entries));
        let live = self.family_sets(family)?;
        let (now, tmp) = live.of(family);
        let now = now.map(|s| normalized(&s.entries));
        if now != old || tmp {
            return Err(BackendError::Verify(format!(
                "after undoing, ipset {} {} and temporary ipset {} {}",
                update.set,
                match (&now, &old) {
                    (None, None) => "is absent as before".to_string(),
                    (Some(n), Some(o)) if n == o => "holds its previous members".to_string(),
                    (Some(n), _) => format!("holds {} members, not the previous ones", n.len()),
                    (None, Some(_)) => "is missing".to_string(),
                },
                update.tmp,
                if tmp { "is still there" } else { "is gone" }
            )));
        }
        Ok(())
    }

    /// Undoes `done`, last step first, after `cause` made an apply fail; returns the error to
    /// report. Every step is tried even when an earlier undo failed (a set swapped back is
    /// better than one left swapped); the first undo failure is returned with `cause`, the
    /// others (usually consequences of the first) are logged.
    fn undo(&self, done: &[Step<'_>], cause: BackendError) -> BackendError {
        let mut first: Option<BackendError> = None;
        for step in done.iter().rev() {
            let result = match step {
                Step::Rules(state) => self.undo_family(state),
                Step::Set(update, old) => self.undo_set(update, *old),
            };
            if let Err(e) = result {
                if first.is_some() {
                    tracing::error!("undoing a failed apply: {e}");
                } else {
                    first = Some(e);
                }
            }
        }
        match first {
            None => cause,
            Some(undo) => BackendError::undo_failed(cause, undo),
        }
    }

    /// The entries `plan` wants in each of `families`.
    fn wanted(&self, plan: &Plan, families: &[Family]) -> Vec<(Family, Vec<IpNet>)> {
        let after = plan.after.only(families);
        families
            .iter()
            .map(|&f| (f, after.iter_family(f).collect()))
            .collect()
    }
}

impl Backend for IptablesBackend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    /// The families the spec asks for that this host can hold: IPv6 only when the kernel has
    /// it and the ip6tables tools are installed.
    fn families(&self) -> Result<Vec<Family>, BackendError> {
        Ok(self.held_families().0)
    }

    fn read(&self) -> Result<Live, BackendError> {
        let (managed, mut warnings) = self.held_families();
        let states = self.inspect(&managed)?;
        let mut entries = AllowList::new();
        let mut reasons = Vec::new();
        let mut present = 0;
        for state in &states {
            let nets = self.entries_of(state);
            if state.exists() {
                present += 1;
                if let Some(why) = self.outdated(state, &nets) {
                    reasons.push(why);
                }
            } else {
                reasons.push(format!("{}: objects missing", state.family));
            }
            if state.chain_exists && !state.jumps.is_empty() && !state.jump_first {
                warnings.push(format!(
                    "{}: rules above the jump to {} in INPUT decide first; the allowlist may be \
                     ineffective",
                    state.family, self.chain
                ));
            }
            if state.hidden_base_chains {
                warnings.push(format!(
                    "{}: the filter table holds base chains added with nft that iptables-nft \
                     cannot show; they filter packets too (see `nft list ruleset`)",
                    state.family
                ));
            }
            if state.tmp_exists {
                warnings.push(format!(
                    "{}: temporary ipset {} is left from an interrupted run; the next apply \
                     replaces it",
                    state.family,
                    set_names(state.family).1
                ));
            }
            if !self.ipset && state.set.is_some() {
                warnings.push(format!(
                    "{}: ipset {} is left from ipset mode; purge removes it",
                    state.family,
                    set_names(state.family).0
                ));
            }
            entries.extend_nets(nets);
        }
        let structure = Structure::judge(present != 0, &reasons);
        Ok(Live {
            entries,
            structure,
            warnings,
        })
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let managed = self.held_families().0;
        let states = self.inspect(&managed)?;
        let wanted = self.wanted(plan, &managed);
        // Validates the set members (a zero prefix, a set of the wrong type) without changing
        // anything: ipset has no dry run.
        self.set_updates(&states, &wanted)?;
        for (state, (_, entries)) in states.iter().zip(&wanted) {
            let Some(mut input) = self.family_input(state, entries) else {
                continue;
            };
            if self.ipset && state.set.is_none() {
                // `--test` resolves set names in the kernel; a set that apply would create
                // first does not exist yet, so its match rules cannot be tested here.
                let set = set_names(state.family).0;
                input = input
                    .lines()
                    .filter(|l| !l.contains(&format!("--match-set {set} ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
            self.run_restore(
                state.family,
                &input,
                true,
                "checking the iptables-restore input",
            )?;
        }
        Ok(())
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let managed = self.held_families().0;
        let states = self.inspect(&managed)?;
        let wanted = self.wanted(plan, &managed);
        let updates = self.set_updates(&states, &wanted)?;
        let inputs: Vec<(&FamilyState, String)> = states
            .iter()
            .zip(&wanted)
            .filter_map(|(state, (_, entries))| Some((state, self.family_input(state, entries)?)))
            .collect();
        let mut done: Vec<Step<'_>> = Vec::new();
        // Sets first: rules that match a set need it to exist. One `ipset restore` per family:
        // a restore is no transaction (it stops at a failing line and keeps the lines before
        // it), so each family's swap is a step of its own, verified, and undone, with every
        // step before it, when it or a later step fails. A failed swap is a step too: it may
        // have created or swapped sets before failing.
        for update in &updates {
            let old = states
                .iter()
                .find(|s| s.family == update.family)
                .and_then(|s| s.set.as_ref());
            done.push(Step::Set(update, old));
            if let Err(e) = self.swap_set(update) {
                return Err(self.undo(&done, e));
            }
        }
        for (state, input) in &inputs {
            if let Err(e) = self.run_restore(state.family, input, false, "applying the rules") {
                return Err(self.undo(&done, e));
            }
            done.push(Step::Rules(state));
        }
        let finish = rules::finish_sets(&updates);
        if !finish.is_empty() {
            // The temporary sets hold the old members until everything else is in, for the
            // undo. Destroying them is a step too: an `Ok` apply leaves no temporary set, and
            // when this fails the whole apply is undone (a set whose temporary set is already
            // gone gets its old members rebuilt). Sets changed in place have none.
            if let Err(e) =
                self.run_ipset(&finish, "destroying the temporary ipsets (ipset restore)")
            {
                return Err(self.undo(&done, e));
            }
        }
        Ok(())
    }

    fn purge(&self) -> Result<(), BackendError> {
        // Rules first: a set referenced by a rule cannot be destroyed.
        let held = self.held_families().0;
        for family in Family::ALL {
            let state = match self.inspect(&[family]) {
                Ok(mut s) => s.remove(0),
                // A family we do not manage, or that this host cannot hold, may be unusable here
                // (IPv6 disabled); we never wrote anything there then.
                Err(e) if !held.contains(&family) => {
                    tracing::warn!("purge: skipping {family}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !state.foreign_refs.is_empty() {
                return Err(BackendError::Conflict(format!(
                    "{family}: chain {} is referenced by rules we did not write, remove them \
                     first: {}",
                    self.chain,
                    state.foreign_refs.join(" | ")
                )));
            }
            if state.chain_exists || !state.jumps.is_empty() {
                let input = rules::purge_input(&self.chain, &state.jumps, state.chain_exists);
                self.run_restore(family, &input, false, "removing the chain and its jump")?;
            }
        }
        if let Some(LiveSets { present, .. }) = self.read_sets(&[])? {
            let input: String = [TMP_SET_V4, TMP_SET_V6, SET_V4, SET_V6]
                .iter()
                .filter(|n| present.iter().any(|p| p == *n))
                .map(|n| format!("destroy {n}\n"))
                .collect();
            if !input.is_empty() {
                self.run_ipset(&input, "destroying the ipsets")?;
            }
        }
        Ok(())
    }
}

/// Adding parsed networks to an [`AllowList`].
trait ExtendNets {
    fn extend_nets(&mut self, nets: Vec<IpNet>);
}

impl ExtendNets for AllowList {
    fn extend_nets(&mut self, nets: Vec<IpNet>) {
        for net in nets {
            self.insert(net);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chain_names_that_iptables_would_misread_are_refused_with_the_rule_they_break() {
        for (name, rule) in [
            ("", "empty"),
            ("INPUT", "built-in chain"),
            ("OUTPUT", "built-in chain"),
            ("FORWARD", "built-in chain"),
            ("PREROUTING", "built-in chain"),
            ("POSTROUTING", "built-in chain"),
            ("ACCEPT", "target"),
            ("DROP", "target"),
            ("RETURN", "target"),
            ("REJECT", "target"),
            ("QUEUE", "target"),
            ("LOG", "target"),
            ("MASQUERADE", "target"),
            ("-x", "starts with `-`"),
            ("--jump", "starts with `-`"),
            ("!x", "starts with `!`"),
            ("a b", "' '"),
            ("a.b", "'.'"),
            ("é", "'é'"),
            ("a\nb", "'\\n'"),
            ("A234567890123456789012345678X", "29 bytes long"),
        ] {
            let err = validate_chain_name(name).unwrap_err();
            assert!(
                err.contains(&format!("`{}`", name.escape_debug())),
                "{name:?}: {err}"
            );
            assert!(err.contains(rule), "{name:?}: {err}");
        }
    }

    #[test]
    fn usable_chain_names_pass() {
        for name in [
            DEFAULT_CHAIN,
            "cf_allowlist",
            "input",
            "Log",
            "X",
            "A234567890123456789012345678",
            "0-9",
            "a-",
        ] {
            assert_eq!(validate_chain_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn the_backend_refuses_what_the_configuration_check_refuses() {
        let options = IptablesOptions {
            chain: "LOG".into(),
            ..IptablesOptions::default()
        };
        let err = IptablesBackend::new(options, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(
            matches!(&err, BackendError::Conflict(m) if m.contains("`LOG`")),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn accepted_chain_names_are_short_plain_and_not_reserved(name in any::<String>()) {
            match validate_chain_name(&name) {
                Ok(()) => {
                    prop_assert!(!name.is_empty() && name.len() <= CHAIN_NAME_MAX);
                    prop_assert!(name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
                    prop_assert!(!name.starts_with('-'));
                    prop_assert!(!BUILTIN_CHAINS.contains(&name.as_str()));
                    prop_assert!(!RESERVED_TARGETS.contains(&name.as_str()));
                }
                Err(e) => {
                    let quoted = format!("`{}`", name.escape_debug());
                    prop_assert!(e.contains(&quoted), "{}", e);
                }
            }
        }

        #[test]
        fn plain_names_pass_unless_reserved(name in "[A-Za-z0-9_][A-Za-z0-9_-]{0,27}") {
            let reserved = BUILTIN_CHAINS.contains(&name.as_str())
                || RESERVED_TARGETS.contains(&name.as_str());
            prop_assert_eq!(validate_chain_name(&name).is_ok(), !reserved);
        }
    }
}
