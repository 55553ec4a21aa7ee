//! The iptables backend: chain `CF-ALLOWLIST` in the filter table of IPv4 and IPv6, jumped to
//! from the top of `INPUT`, holding one accept rule per range, or one rule per family matching an
//! ipset (`cf-allowlist-v4` / `cf-allowlist-v6`, `hash:net`) that is swapped atomically.
//!
//! Reads with `iptables-save -t filter` / `ip6tables-save -t filter` (and `ipset save`), applies
//! with one `iptables-restore -w N --noflush` per family that replaces only our chain's contents,
//! checks with the same input and `--test`. Works with iptables-nft and iptables-legacy: the
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

use crate::rules::{SetUpdate, Sources};
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
    /// The real sets that exist, parsed.
    sets: Vec<(String, IpSet)>,
}

fn set_names(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::V4 => (SET_V4, TMP_SET_V4),
        Family::V6 => (SET_V6, TMP_SET_V6),
    }
}

/// Built-in chains and targets a chain of ours must not be named after.
const RESERVED: &[&str] = &[
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "QUEUE",
    "LOG",
];

fn validate_chain(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 28
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !RESERVED.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(BackendError::Conflict(format!(
            "iptables chain name `{name}` is not usable: 1 to 28 letters, digits, `-` or `_`, \
             not starting with `-`, not a built-in chain or target"
        )))
    }
}

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
        })
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

    fn families(&self) -> impl Iterator<Item = Family> + '_ {
        Family::ALL.into_iter().filter(|f| self.spec.manages(*f))
    }

    /// Reads our sets (both families) when ipset is installed; `None` when it is not.
    fn read_sets(&self) -> Result<Option<LiveSets>, BackendError> {
        if !self.runner.has("ipset") {
            return Ok(None);
        }
        let names = self
            .runner
            .run("ipset", &["list", "-n"], None)
            .map_err(|e| BackendError::command("listing ipsets (ipset list -n)", e))?
            .stdout;
        let present: Vec<String> = names
            .lines()
            .map(str::trim)
            .filter(|n| [SET_V4, SET_V6, TMP_SET_V4, TMP_SET_V6].contains(n))
            .map(str::to_string)
            .collect();
        let mut sets = Vec::new();
        for name in [SET_V4, SET_V6] {
            if !present.iter().any(|p| p == name) {
                continue;
            }
            let what = format!("ipset save {name}");
            let out = self
                .runner
                .run("ipset", &["save", name], None)
                .map_err(|e| BackendError::command(format!("reading set {name}"), e))?;
            if let Some(set) = save::parse_ipset_save(&out.stdout, &[name], &what)?.remove(name) {
                sets.push((name.to_string(), set));
            }
        }
        Ok(Some(LiveSets { present, sets }))
    }

    fn read_table(&self, family: Family) -> Result<Table, BackendError> {
        let program = self.tools.save(family);
        let out = self
            .runner
            .run(&program, &["-t", "filter"], None)
            .map_err(|e| BackendError::command(format!("reading the {family} filter table"), e))?;
        save::parse_save(&out.stdout, "filter", &format!("{program} -t filter"))
    }

    /// Reads our objects in `families`.
    fn inspect(&self, families: &[Family]) -> Result<Vec<FamilyState>, BackendError> {
        let sets = self.read_sets()?;
        families
            .iter()
            .map(|&family| {
                let table = self.read_table(family)?;
                let (set_name, tmp_name) = set_names(family);
                let (set, tmp_exists) = match &sets {
                    Some(LiveSets { present, sets }) => (
                        sets.iter()
                            .find(|(n, _)| n == set_name)
                            .map(|(_, s)| s.clone()),
                        present.iter().any(|p| p == tmp_name),
                    ),
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
        let mut nets: Vec<IpNet> = state
            .chain_rules
            .iter()
            .filter_map(|text| save::tokenize(text).ok())
            .filter(|t| t.iter().any(|w| w == "ACCEPT"))
            .filter_map(|t| {
                let i = t.iter().position(|w| w == "-s")?;
                cfa_core::parse_cidr(t.get(i + 1)?).ok()
            })
            .collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// Why a family's objects are not what this spec builds for `entries`, or `None`.
    fn outdated(&self, state: &FamilyState, entries: &[IpNet]) -> Option<String> {
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
        let program = self.tools.restore(family);
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
            .run("ipset", &["restore"], Some(input))
            .map(|_| ())
            .map_err(|e| BackendError::command(doing, e))
    }

    /// What `apply` (and `check`) do for one family: the iptables-restore input, when the chain
    /// or jump must change.
    fn family_input(&self, state: &FamilyState, wanted: &[IpNet]) -> Option<String> {
        self.outdated(state, wanted)?;
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
                if have == *entries && !state.tmp_exists {
                    continue;
                }
            }
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

    fn wanted(&self, plan: &Plan) -> Vec<(Family, Vec<IpNet>)> {
        let after = plan.after.only(&self.spec.families);
        self.families()
            .map(|f| (f, after.iter_family(f).collect()))
            .collect()
    }
}

impl Backend for IptablesBackend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn read(&self) -> Result<Live, BackendError> {
        let managed: Vec<Family> = self.families().collect();
        let states = self.inspect(&managed)?;
        let mut entries = AllowList::new();
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
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
        let managed: Vec<Family> = self.families().collect();
        let states = self.inspect(&managed)?;
        let wanted = self.wanted(plan);
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
        let managed: Vec<Family> = self.families().collect();
        let states = self.inspect(&managed)?;
        let wanted = self.wanted(plan);
        let updates = self.set_updates(&states, &wanted)?;
        let inputs: Vec<(&FamilyState, String)> = states
            .iter()
            .zip(&wanted)
            .filter_map(|(state, (_, entries))| Some((state, self.family_input(state, entries)?)))
            .collect();
        // Sets first: rules that match a set need it to exist. When no rule changes, the
        // temporary sets (now holding the old members) go in the same `ipset restore`; otherwise
        // they stay until the rules are in, so that a failure can swap the old members back.
        if !updates.is_empty() {
            let mut input = rules::ipset_swap_input(&updates);
            if inputs.is_empty() {
                input.push_str(&rules::finish_sets(&updates));
            }
            self.run_ipset(&input, "updating the ipsets (ipset restore)")?;
        }
        let mut done: Vec<&FamilyState> = Vec::new();
        for (state, input) in &inputs {
            if let Err(err) = self.run_restore(state.family, input, false, "applying the rules") {
                let mut undo_errors = Vec::new();
                for earlier in done.iter().rev() {
                    if let Err(e) = self.undo_family(earlier) {
                        undo_errors.push(e.to_string());
                    }
                }
                if !updates.is_empty() {
                    if let Err(e) = self.run_ipset(
                        &rules::undo_sets(&updates),
                        "restoring the previous ipset members",
                    ) {
                        undo_errors.push(e.to_string());
                    }
                }
                if undo_errors.is_empty() {
                    return Err(err);
                }
                return Err(BackendError::Conflict(format!(
                    "{err}; rolling back also failed: {}",
                    undo_errors.join("; ")
                )));
            }
            done.push(state);
        }
        if !updates.is_empty() && !inputs.is_empty() {
            // The allowlist is in place; a temporary set left behind is harmless, reported by
            // `read` and replaced by the next apply, so this is not a failed apply.
            if let Err(e) = self.run_ipset(
                &rules::finish_sets(&updates),
                "destroying the temporary ipsets",
            ) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    fn purge(&self) -> Result<(), BackendError> {
        // Rules first: a set referenced by a rule cannot be destroyed.
        for family in Family::ALL {
            let state = match self.inspect(&[family]) {
                Ok(mut s) => s.remove(0),
                // A family we do not manage may be unusable here (IPv6 disabled); we never
                // wrote anything there then.
                Err(e) if !self.spec.manages(family) => {
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
        if let Some(LiveSets { present, .. }) = self.read_sets()? {
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
