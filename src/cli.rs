//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{BackendKind, HumanDuration};

/// Keep this server's firewall allowlist equal to Cloudflare's published IP ranges.
///
/// cf-allowlist fetches Cloudflare's ranges (and any the operator adds), validates them strictly,
/// plans the difference against the live firewall (nftables, iptables with or without ipset, ufw
/// or csf), refuses lists and plans that would lock Cloudflare out or open the origin wider, and
/// applies the change atomically, then reads it back. An unreachable list serves the last good
/// one, add-only. `audit` tells why an origin shows Error 521. Run `sync` from the packaged
/// systemd timer, or from cron.
#[derive(Debug, Parser)]
#[command(name = "cf-allowlist", version, about)]
pub struct Cli {
    /// Configuration file [default: /etc/cf-allowlist/config.yaml, built-in defaults when absent].
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Backend, overriding the configuration.
    #[arg(short, long, global = true, value_name = "NAME")]
    pub backend: Option<BackendKind>,
    /// Output format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Errors only (for cron).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object (`"schema": 1`), for Ansible and scripts.
    Json,
    /// A Nagios/Icinga plugin line with perfdata, exit 0-3 (`audit` only).
    Nagios,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the list, plan, and apply it to the firewall.
    Sync(SyncArgs),
    /// Download and validate the list and print it. Writes nothing.
    Fetch,
    /// Remove every object this tool owns from the backend.
    Purge(PurgeArgs),
    /// Read-only: is the allowlist there, current and effective? Would Cloudflare's SYN reach the
    /// web server, and would a stranger's? (The Error 521 doctor.)
    Audit(AuditArgs),
    /// Validate the configuration and print the effective configuration.
    CheckConfig,
}

/// `sync` options.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Print the plan and change nothing (no firewall change, no cache write).
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even a plan that removes more than guards.max_removal of the entries.
    #[arg(long)]
    pub force: bool,
    /// Exit 2 when changes were applied (or planned, with --dry-run).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// No network: use the cached list, else the embedded snapshot (add-only).
    #[arg(long)]
    pub offline: bool,
    /// Sleep a random time up to this first (e.g. 10m), to spread a fleet's cron runs.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub random_delay: Option<HumanDuration>,
}

/// `audit` options.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Judge against the cached list (else the embedded snapshot) without asking the network.
    #[arg(long)]
    pub offline: bool,
}

/// `purge` options.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    s.parse()
}
