//! The `cf-allowlist` binary: parse the command line, run, print, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use cf_allowlist::app::{self, exit};
use cf_allowlist::cli::{Cli, OutputFormat};
use cf_allowlist::report;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            let _ = e.print();
            if code == exit::USAGE && asks_for_json(std::env::args_os().skip(1)) {
                let message = e
                    .kind()
                    .as_str()
                    .unwrap_or("invalid command line")
                    .to_string();
                let detail = e.render().to_string();
                let first = detail
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&message)
                    .trim_start_matches("error: ")
                    .to_string();
                println!("{}", report::error_json("usage", &first));
            }
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    let json_mode = cli.output == OutputFormat::Json;
    let nagios_mode = cli.output == OutputFormat::Nagios;
    if nagios_mode && !matches!(cli.command, cf_allowlist::cli::Command::Audit(_)) {
        eprintln!("error: --output nagios is for `audit` only");
        return ExitCode::from(exit::USAGE);
    }
    let mut stdout = std::io::stdout().lock();
    match app::run(&cli) {
        Ok(report) => {
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
            if json_mode {
                let _ = writeln!(stdout, "{}", report.json);
            } else if nagios_mode || !cli.quiet {
                let _ = write!(stdout, "{}", report.text);
            }
            ExitCode::from(report.exit)
        }
        Err(failure) => {
            tracing::error!("{}", failure.message);
            if nagios_mode {
                // The plugin could not decide: UNKNOWN, whatever went wrong.
                let line = failure.message.lines().next().unwrap_or_default();
                let _ = writeln!(
                    stdout,
                    "CF-ALLOWLIST UNKNOWN - {} error: {line}",
                    failure.kind
                );
                return ExitCode::from(3);
            }
            if json_mode {
                let _ = writeln!(
                    stdout,
                    "{}",
                    report::error_json(failure.kind, &failure.message)
                );
            }
            ExitCode::from(failure.exit)
        }
    }
}

/// Whether a command line that clap refused still asked for `--output json` (so that a script
/// reading stdout gets the JSON error object it expects).
fn asks_for_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--output=json" || (a == "--output" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CF_ALLOWLIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}
