//! The `cf-allowlist` binary: parse the command line, run, print, exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use cf_allowlist::app::{self, exit};
use cf_allowlist::cli::{Cli, OutputFormat};
use clap::Parser;
use serde_json::json;

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
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    let json_mode = cli.output == OutputFormat::Json;
    let mut stdout = std::io::stdout().lock();
    match app::run(&cli) {
        Ok(report) => {
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
            if json_mode {
                let _ = writeln!(stdout, "{}", report.json);
            } else if !cli.quiet {
                let _ = write!(stdout, "{}", report.text);
            }
            ExitCode::from(report.exit)
        }
        Err(failure) => {
            tracing::error!("{}", failure.message);
            if json_mode {
                let _ = writeln!(
                    stdout,
                    "{}",
                    json!({ "schema": 1, "error": { "kind": failure.kind, "message": failure.message } })
                );
            }
            ExitCode::from(failure.exit)
        }
    }
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
