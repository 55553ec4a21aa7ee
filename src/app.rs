//! The commands: each returns a [`Report`] (what to print, the exit code) or a [`Failure`].

use std::time::Duration;

use cfa_core::{AllowList, Backend, Family, Plan, Structure};
use serde_json::{json, Value};

use crate::cli::{Cli, Command, PurgeArgs, SyncArgs};
use crate::config::{Config, ConfigError};
use crate::fetch::{Fetcher, HttpConfig};
use crate::sources::{Resolved, Resolver};
use crate::state::{self, State};
use crate::{backends, lock};

/// Exit codes (SPEC "Commands").
pub mod exit {
    /// Success, nothing changed (or not asked to tell).
    pub const OK: u8 = 0;
    /// Runtime failure; nothing half-applied.
    pub const FAILURE: u8 = 1;
    /// `--detailed-exitcode`: changes applied or planned.
    pub const CHANGED: u8 = 2;
    /// Usage error.
    pub const USAGE: u8 = 64;
    /// Invalid configuration.
    pub const CONFIG: u8 = 78;
}

/// A failed command: its JSON `kind`, message and exit code.
#[derive(Debug)]
pub struct Failure {
    /// `config`, `source`, `guard`, `backend`, `verify`, `lock`, `state`.
    pub kind: &'static str,
    /// What failed, the object and the cause.
    pub message: String,
    /// The exit code.
    pub exit: u8,
}

impl Failure {
    fn runtime(kind: &'static str, message: impl std::fmt::Display) -> Self {
        Failure {
            kind,
            message: message.to_string(),
            exit: exit::FAILURE,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            kind: "config",
            message: e.to_string(),
            exit: exit::CONFIG,
        }
    }
}

/// A finished command: text for people, JSON for machines, the exit code.
#[derive(Debug)]
pub struct Report {
    /// Printed with `--output text` (unless `--quiet`).
    pub text: String,
    /// Printed with `--output json`.
    pub json: Value,
    /// Warnings, logged on stderr.
    pub warnings: Vec<String>,
    /// The exit code.
    pub exit: u8,
}

/// Runs the command `cli` names.
pub fn run(cli: &Cli) -> Result<Report, Failure> {
    match &cli.command {
        Command::CheckConfig => check_config(cli),
        Command::Fetch => fetch(cli),
        Command::Sync(args) => sync(cli, args),
        Command::Purge(args) => purge(cli, args),
    }
}

fn load(cli: &Cli) -> Result<(Config, String), Failure> {
    let (mut config, from) = Config::load(cli.config.as_deref())?;
    if let Some(b) = cli.backend {
        config.backend = b;
    }
    Ok((config, from))
}

fn check_config(cli: &Cli) -> Result<Report, Failure> {
    let (config, from) = load(cli)?;
    let yaml = config.to_yaml();
    Ok(Report {
        text: format!("# configuration OK: {from}\n{yaml}"),
        json: json!({ "schema": 1, "valid": true, "path": from, "config": config }),
        warnings: vec![],
        exit: exit::OK,
    })
}

fn fetcher(config: &Config) -> Fetcher {
    Fetcher::new(HttpConfig {
        timeout: config.fetch.timeout.0,
        connect_timeout: config.fetch.timeout.0.min(Duration::from_secs(5)),
        retries: config.fetch.retries,
        max_bytes: config.fetch.max_bytes.0,
        ..HttpConfig::default()
    })
}

/// Every source resolved, the desired list, and the warnings so far.
struct Desired {
    sources: Vec<Resolved>,
    list: AllowList,
    degraded: bool,
    warnings: Vec<String>,
    state: State,
}

fn resolve(config: &Config, offline: bool) -> Result<Desired, Failure> {
    let (state, state_warning) = State::load(&config.state_dir);
    let fetcher = fetcher(config);
    let sources = Resolver::new(config, &fetcher, &state, offline, state::now())
        .resolve()
        .map_err(|e| Failure::runtime("source", e))?;
    let mut warnings: Vec<String> = state_warning.into_iter().collect();
    let mut union = AllowList::new();
    for s in &sources {
        warnings.extend(s.notes.iter().cloned());
        warnings.extend(s.warning());
        union = union.union(&s.list);
    }
    let degraded = sources.iter().any(|s| s.served.degraded());
    Ok(Desired {
        list: union.aggregate(),
        degraded,
        warnings,
        sources,
        state,
    })
}

fn families_json(list: &AllowList) -> Value {
    json!({ "ipv4": list.strings(Family::V4), "ipv6": list.strings(Family::V6) })
}

fn fetch(cli: &Cli) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    let desired = resolve(&config, false)?;
    let text: String = desired.list.iter().map(|n| format!("{n}\n")).collect();
    Ok(Report {
        text,
        json: json!({
            "schema": 1,
            "source": desired.sources,
            "degraded": desired.degraded,
            "cidrs": families_json(&desired.list),
            "count": desired.list.len(),
            "warnings": desired.warnings,
        }),
        warnings: desired.warnings,
        exit: exit::OK,
    })
}

fn backend_failure(e: cfa_core::BackendError) -> Failure {
    Failure::runtime("backend", e)
}

fn sync(cli: &Cli, args: &SyncArgs) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    if let Some(max) = args.random_delay {
        let wait = random_below(max.0);
        tracing::info!(seconds = wait.as_secs_f64(), "random delay");
        std::thread::sleep(wait);
    }
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout.0)
        .map_err(|e| Failure::runtime("lock", e))?;
    let mut desired = resolve(&config, args.offline)?;
    let backend = backends::build(&config, config.backend).map_err(backend_failure)?;
    let live = backend.read().map_err(backend_failure)?;
    let families = backend.families().map_err(backend_failure)?;
    desired.list = desired.list.only(&families);
    let mut warnings = std::mem::take(&mut desired.warnings);
    warnings.extend(live.warnings.iter().cloned());

    // A degraded source never removes coverage: what is live stays.
    let target = if desired.degraded {
        desired.list.union(&live.entries).aggregate()
    } else {
        desired.list.clone()
    };
    if target.is_empty() {
        return Err(Failure::runtime(
            "guard",
            "the desired allowlist is empty; refusing to apply it",
        ));
    }
    let plan = Plan::new(&live, &target).map(|mut p| {
        p.origin = Some(origin_line(&desired.sources));
        p
    });
    if let Some(plan) = &plan {
        check_removal(&config, plan, args.force)?;
    }

    if let Some(plan) = &plan {
        tracing::info!(backend = backend.name(), %plan, dry_run = args.dry_run, "plan");
        if args.dry_run {
            backend.check(plan).map_err(backend_failure)?;
        } else {
            backend.apply(plan).map_err(backend_failure)?;
            verify(backend.as_ref(), plan)?;
        }
    }
    if !args.dry_run {
        save_cache(&config, &desired, &mut warnings);
    }
    let changed = plan.is_some();
    let report_plan = plan.clone().unwrap_or_else(|| Plan {
        before: live.entries.clone(),
        after: live.entries.clone(),
        add: AllowList::new(),
        remove: AllowList::new(),
        rebuild: None,
        origin: None,
    });
    let text = sync_text(backend.name(), &report_plan, changed, args.dry_run);
    let exit = if changed && args.detailed_exitcode {
        exit::CHANGED
    } else {
        exit::OK
    };
    Ok(Report {
        text,
        json: json!({
            "schema": 1,
            "command": "sync",
            "changed": changed,
            "dry_run": args.dry_run,
            "backend": backend.name(),
            "source": desired.sources,
            "degraded": desired.degraded,
            "added": families_json(&report_plan.add),
            "removed": families_json(&report_plan.remove),
            "unchanged": report_plan.unchanged(),
            "before": families_json(&report_plan.before),
            "after": families_json(&report_plan.after),
            "rebuild": report_plan.rebuild,
            "warnings": warnings,
        }),
        warnings,
        exit,
    })
}

fn origin_line(sources: &[Resolved]) -> String {
    sources
        .iter()
        .map(|s| format!("{} ({})", s.id, s.served.kind()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `guards.max_removal`: a plan removing more than this share of the managed entries is refused.
fn check_removal(config: &Config, plan: &Plan, force: bool) -> Result<(), Failure> {
    let before = plan.before.len();
    let removing = plan.remove.len();
    if before == 0 || removing == 0 {
        return Ok(());
    }
    let share = removing as f64 / before as f64;
    if share <= config.guards.max_removal {
        return Ok(());
    }
    if force {
        tracing::warn!(
            removing,
            before,
            "--force: applying a plan above guards.max_removal"
        );
        return Ok(());
    }
    Err(Failure::runtime(
        "guard",
        format!(
            "the plan removes {removing} of {before} entries ({:.0}%), more than guards.max_removal ({:.0}%); nothing changed. Check the source, or run again with --force",
            share * 100.0,
            config.guards.max_removal * 100.0
        ),
    ))
}

/// Reads the firewall back and compares it with the plan.
fn verify(backend: &dyn Backend, plan: &Plan) -> Result<(), Failure> {
    let after = backend.read().map_err(backend_failure)?;
    let mut problems = Vec::new();
    if after.structure != Structure::Current {
        problems.push(format!("objects not as written: {:?}", after.structure));
    }
    let missing = plan.after.difference(&after.entries);
    let extra = after.entries.difference(&plan.after);
    if !missing.is_empty() {
        problems.push(format!(
            "missing {:?}",
            missing.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "unexpected {:?}",
            extra.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(
            "verify",
            format!(
                "{}: after apply the live state differs from the plan: {}",
                backend.name(),
                problems.join("; ")
            ),
        ))
    }
}

/// Stores new lists and validators; a failure here is a warning (the firewall is already right).
fn save_cache(config: &Config, desired: &Desired, warnings: &mut Vec<String>) {
    let mut state = desired.state.clone();
    let mut dirty = false;
    for s in &desired.sources {
        if let Some(update) = &s.cache_update {
            let same = state.sources.get(&s.id).is_some_and(|old| {
                old.cidrs == update.cidrs
                    && old.etag == update.etag
                    && old.last_modified == update.last_modified
                    && old.url == update.url
            });
            if !same {
                state.sources.insert(s.id.clone(), update.clone());
                dirty = true;
            }
        }
    }
    if dirty {
        if let Err(e) = state.save(&config.state_dir) {
            warnings.push(format!("could not store the list for next time: {e}"));
        }
    }
}

fn sync_text(backend: &str, plan: &Plan, changed: bool, dry_run: bool) -> String {
    let mut s = String::new();
    if !changed {
        s.push_str(&format!(
            "{backend}: up to date ({} entries)\n",
            plan.after.len()
        ));
        return s;
    }
    let verb = if dry_run { "would change" } else { "changed" };
    s.push_str(&format!(
        "{backend}: {verb}: +{} -{} ={}\n",
        plan.add.len(),
        plan.remove.len(),
        plan.unchanged()
    ));
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

fn purge(cli: &Cli, args: &PurgeArgs) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout.0)
        .map_err(|e| Failure::runtime("lock", e))?;
    let backend = backends::build(&config, config.backend).map_err(backend_failure)?;
    let live = backend.read().map_err(backend_failure)?;
    let changed = live.is_present();
    if changed && !args.dry_run {
        backend.purge().map_err(backend_failure)?;
        let after = backend.read().map_err(backend_failure)?;
        if after.is_present() {
            return Err(Failure::runtime(
                "verify",
                format!(
                    "{}: objects remain after purge: {:?}",
                    backend.name(),
                    after.structure
                ),
            ));
        }
    }
    let verb = match (changed, args.dry_run) {
        (false, _) => "nothing to remove".to_string(),
        (true, true) => format!(
            "would remove the allowlist ({} entries)",
            live.entries.len()
        ),
        (true, false) => format!("removed the allowlist ({} entries)", live.entries.len()),
    };
    Ok(Report {
        text: format!("{}: {verb}\n", backend.name()),
        json: json!({
            "schema": 1,
            "command": "purge",
            "changed": changed,
            "dry_run": args.dry_run,
            "backend": backend.name(),
            "source": [],
            "added": families_json(&AllowList::new()),
            "removed": families_json(&live.entries),
            "unchanged": 0,
            "before": families_json(&live.entries),
            "after": families_json(&AllowList::new()),
            "warnings": live.warnings,
        }),
        warnings: live.warnings.clone(),
        exit: exit::OK,
    })
}

fn random_below(max: Duration) -> Duration {
    use rand::Rng;
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..max.as_millis().min(u64::MAX as u128) as u64))
}
