//! The commands: each returns a [`Report`] (what to print, the exit code) or a [`Failure`].

use std::time::Duration;

use cfa_core::{AllowList, Backend, Family, Plan};
use serde_json::{json, Value};

use crate::cli::{AuditArgs, Cli, Command, OutputFormat, PurgeArgs, SyncArgs};
use crate::config::{Config, ConfigError};
use crate::fetch::{Fetcher, HttpConfig};
use crate::sources::{Resolved, Resolver};
use crate::state::{self, State};
use crate::{backends, lock, plan, report};

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
    /// `config`, `source`, `guard`, `backend`, `output`, `verify`, `lock`, `state`.
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
        Command::Audit(args) => audit(cli, args),
    }
}

fn load(cli: &Cli) -> Result<(Config, String), Failure> {
    let (mut config, from) = Config::load(cli.config.as_deref())?;
    if let Some(b) = cli.backend {
        config.backend = b;
    }
    let invalid = |message: String| {
        Failure::from(crate::config::ConfigError::Invalid {
            path: from.clone(),
            message,
        })
    };
    backends::check_options(&config).map_err(invalid)?;
    // An unusable CA file is a configuration error found before anything is written (the lock).
    if let Some(path) = &config.fetch.ca_file {
        crate::fetch::load_ca_file(path).map_err(|e| invalid(format!("fetch.ca_file: {e}")))?;
    }
    Ok((config, from))
}

fn check_config(cli: &Cli) -> Result<Report, Failure> {
    let (config, from) = load(cli)?;
    let yaml = config.to_yaml();
    Ok(Report {
        text: format!("# configuration OK: {from}\n{yaml}"),
        json: json!({ "schema": report::SCHEMA, "valid": true, "path": from, "config": config }),
        warnings: vec![],
        exit: exit::OK,
    })
}

/// The HTTP client for `config`; an unusable `fetch.ca_file` is a configuration error.
fn fetcher(config: &Config) -> Result<Fetcher, Failure> {
    let roots = match &config.fetch.ca_file {
        Some(path) => Some(crate::fetch::load_ca_file(path).map_err(|e| Failure {
            kind: "config",
            message: format!("fetch.ca_file: {e}"),
            exit: exit::CONFIG,
        })?),
        None => None,
    };
    Ok(Fetcher::new(HttpConfig {
        timeout: config.fetch.timeout.0,
        connect_timeout: config.fetch.timeout.0.min(Duration::from_secs(5)),
        retries: config.fetch.retries,
        max_bytes: config.fetch.max_bytes.0,
        roots,
        ..HttpConfig::default()
    }))
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
    let fetcher = fetcher(config)?;
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

fn fetch(cli: &Cli) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    let desired = resolve(&config, false)?;
    let text: String = desired.list.iter().map(|n| format!("{n}\n")).collect();
    Ok(Report {
        text,
        json: json!({
            "schema": report::SCHEMA,
            "source": desired.sources,
            "degraded": desired.degraded,
            "cidrs": report::families_json(&desired.list),
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

fn output_failure(e: impl std::fmt::Display) -> Failure {
    Failure::runtime("output", e)
}

/// The families to manage: the configured ones the backend can hold (one source of truth).
fn managed_families(config: &Config, backend: &dyn Backend) -> Result<Vec<Family>, Failure> {
    let can = backend.families().map_err(backend_failure)?;
    Ok(config
        .rule_spec()
        .families
        .into_iter()
        .filter(|f| can.contains(f))
        .collect())
}

fn sync(cli: &Cli, args: &SyncArgs) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    if let Some(max) = args.random_delay {
        let wait = random_below(max.0);
        tracing::info!(seconds = wait.as_secs_f64(), "random delay");
        std::thread::sleep(wait);
    }
    let mode = lock::Mode::for_dry_run(args.dry_run);
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout.0, mode)
        .map_err(|e| Failure::runtime("lock", e))?;
    let mut desired = resolve(&config, args.offline)?;
    let backend = backends::build(&config, config.backend).map_err(backend_failure)?;
    let live = backend.read().map_err(backend_failure)?;
    let families = managed_families(&config, backend.as_ref())?;
    let mut warnings = std::mem::take(&mut desired.warnings);
    warnings.extend(live.warnings.iter().cloned());

    let planned = plan::plan(plan::Inputs {
        desired: &desired.list,
        live: &live,
        degraded: desired.degraded,
        families: &families,
        max_removal: config.guards.max_removal,
        force: args.force,
    })
    .map_err(|e| Failure::runtime("guard", e))?;
    warnings.extend(planned.warnings.iter().cloned());
    let plan = planned.plan.map(|mut p| {
        p.origin = Some(origin_line(&desired.sources));
        p
    });
    // The outputs get the same list, of the configured families, planned before anything is
    // applied: an output that cannot be planned fails the run with nothing changed.
    let output_list = desired.list.only(&config.rule_spec().families);
    let outputs = crate::outputs::prepare(&config.outputs, &output_list, desired.degraded)
        .map_err(output_failure)?;
    warnings.extend(outputs.warnings.iter().cloned());

    if let Some(plan) = &plan {
        tracing::info!(backend = backend.name(), %plan, dry_run = args.dry_run, "plan");
        if args.dry_run {
            backend.check(plan).map_err(backend_failure)?;
        } else {
            backend.apply(plan).map_err(backend_failure)?;
            let after = backend.read().map_err(backend_failure)?;
            plan::verify(plan, &after).map_err(|problems| {
                Failure::runtime(
                    "verify",
                    format!(
                        "{}: after apply the live state differs from the plan: {problems}",
                        backend.name()
                    ),
                )
            })?;
        }
    }
    // Every output is tried; one failing leaves its own file and server as they were.
    let ran = crate::outputs::run(outputs, Some(&output_list), args.dry_run);
    warnings.extend(ran.warnings.iter().cloned());
    if !args.dry_run {
        save_cache(&config, &desired, &mut warnings);
    }
    if let Some(failed) = ran.failed {
        let firewall = match (&plan, args.dry_run) {
            (None, _) => "the firewall was already up to date",
            (Some(_), true) => "the firewall check passed",
            (Some(_), false) => "the firewall was changed and verified",
        };
        return Err(output_failure(format!("{failed}; {firewall}")));
    }
    let shown = plan
        .clone()
        .unwrap_or_else(|| report::unchanged(&live.entries));
    let change = report::Change {
        command: "sync",
        backend: backend.name(),
        plan: &shown,
        changed: plan.is_some() || ran.changed(),
        dry_run: args.dry_run,
        sources: &desired.sources,
        degraded: desired.degraded,
        warnings: &warnings,
        outputs: &ran.outcomes,
    };
    let exit = if change.changed && args.detailed_exitcode {
        exit::CHANGED
    } else {
        exit::OK
    };
    Ok(Report {
        text: change.text(),
        json: change.json(),
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

fn purge(cli: &Cli, args: &PurgeArgs) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    let mode = lock::Mode::for_dry_run(args.dry_run);
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout.0, mode)
        .map_err(|e| Failure::runtime("lock", e))?;
    let backend = backends::build(&config, config.backend).map_err(backend_failure)?;
    let live = backend.read().map_err(backend_failure)?;
    let outputs = crate::outputs::prepare_purge(&config.outputs).map_err(output_failure)?;
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
    let ran = crate::outputs::run(outputs, None, args.dry_run);
    if let Some(failed) = ran.failed {
        return Err(output_failure(failed));
    }
    let plan = Plan {
        before: live.entries.clone(),
        after: AllowList::new(),
        add: AllowList::new(),
        remove: live.entries.clone(),
        rebuild: None,
        origin: None,
    };
    let change = report::Change {
        command: "purge",
        backend: backend.name(),
        plan: &plan,
        changed: changed || ran.changed(),
        dry_run: args.dry_run,
        sources: &[],
        degraded: false,
        warnings: &live.warnings,
        outputs: &ran.outcomes,
    };
    Ok(Report {
        text: change.text(),
        json: change.json(),
        warnings: live.warnings.clone(),
        exit: exit::OK,
    })
}

/// `audit`: read-only. No lock is taken (nothing is written), no state is saved, and the only
/// firewall calls are reads.
fn audit(cli: &Cli, args: &AuditArgs) -> Result<Report, Failure> {
    let (config, _) = load(cli)?;
    let desired = resolve(&config, args.offline)?;
    let runner = cfa_core::Runner::new();
    let backend = backends::build(&config, config.backend).map_err(backend_failure)?;
    let live = backend.read().map_err(|e| e.to_string());
    let families = match &live {
        Ok(_) => managed_families(&config, backend.as_ref())?,
        Err(_) => config.rule_spec().families,
    };
    let detected_other = match config.backend {
        crate::config::BackendKind::Auto => None,
        configured => {
            // Detection ends at nftables when it finds nothing else: that is no other manager,
            // so it is no conflict whatever the configuration names.
            let found = backends::detect(&config, &runner);
            (found != configured && found != crate::config::BackendKind::Nftables)
                .then(|| found.to_string())
        }
    };
    let (rulesets, unreadable) = crate::audit::rulesets(&runner);
    let mut spec = config.rule_spec();
    spec.families = families.clone();
    let observed = crate::audit::Observed {
        backend: backend.name().to_string(),
        detected_other,
        live,
        desired: desired.list.only(&families),
        sources: desired.sources,
        state_present: config.state_dir.join(state::STATE_FILE).exists(),
        spec,
        max_age: config.audit.max_age.0.as_secs(),
        rulesets,
        unreadable,
        sockets: [cfa_eval::L4::Tcp, cfa_eval::L4::Udp]
            .into_iter()
            .flat_map(crate::listen::sockets)
            .collect(),
        owners: crate::listen::owners(),
    };
    let findings = crate::audit::analyze(&observed, state::now());
    let mut warnings = desired.warnings;
    warnings.extend(crate::outputs::banned(&config.outputs, &observed.desired));
    let found = crate::audit::worst(&findings) > Some(crate::audit::Severity::Info);
    let (text, exit) = if cli.output == OutputFormat::Nagios {
        crate::audit::nagios(&observed, &findings)
    } else {
        (
            crate::audit::text(&observed, &findings),
            if found { exit::CHANGED } else { exit::OK },
        )
    };
    Ok(Report {
        text,
        json: crate::audit::json(&observed, &findings),
        warnings,
        exit,
    })
}

fn random_below(max: Duration) -> Duration {
    use rand::Rng;
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..max.as_millis().min(u64::MAX as u128) as u64))
}
