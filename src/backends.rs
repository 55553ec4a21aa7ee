//! Choosing and building the backend: the only place that knows every backend crate.

use cfa_core::{Backend, BackendError, Runner};

use crate::config::{BackendKind, Config, TriState, Variant};

/// Builds the backend `kind` (resolving `auto`) for `config`.
pub fn build(config: &Config, kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    let runner = Runner::new();
    let spec = config.rule_spec();
    let kind = match kind {
        BackendKind::Auto => {
            let k = detect(config, &runner);
            tracing::info!(backend = %k, "backend: auto chose {k}");
            k
        }
        k => k,
    };
    Ok(match kind {
        BackendKind::Nftables => Box::new(cfa_nftables::NftablesBackend::new(
            cfa_nftables::NftOptions {
                family: config.nftables.family.clone(),
                table: config.nftables.table.clone(),
                chain: config.nftables.chain.clone(),
            },
            spec,
            runner,
        )?),
        BackendKind::Iptables => Box::new(cfa_iptables::IptablesBackend::new(
            cfa_iptables::IptablesOptions {
                chain: config.iptables.chain.clone(),
                ipset: match config.iptables.ipset {
                    TriState::Auto => cfa_iptables::IpsetMode::Auto,
                    TriState::Always => cfa_iptables::IpsetMode::Always,
                    TriState::Never => cfa_iptables::IpsetMode::Never,
                },
                variant: match config.iptables.variant {
                    Variant::Auto => cfa_iptables::Variant::Auto,
                    Variant::Nft => cfa_iptables::Variant::Nft,
                    Variant::Legacy => cfa_iptables::Variant::Legacy,
                },
            },
            spec,
            runner,
        )?),
        BackendKind::Ufw => Box::new(cfa_ufw::UfwBackend::new(
            cfa_ufw::UfwOptions {
                comment: config.ufw.comment.clone(),
                dir: config.ufw.dir.clone(),
                ..cfa_ufw::UfwOptions::default()
            },
            spec,
            runner,
        )),
        BackendKind::Csf => Box::new(cfa_csf::CsfBackend::new(
            cfa_csf::CsfOptions {
                dir: config.csf.dir.clone(),
                ignore: config.csf.ignore,
                reload: config.csf.reload.clone(),
            },
            spec,
            runner,
        )),
        BackendKind::Auto => unreachable!("auto is resolved above"),
    })
}

/// `auto`: active ufw, else an installed csf, else rules present in iptables' filter INPUT,
/// else nftables.
fn detect(config: &Config, runner: &Runner) -> BackendKind {
    if cfa_ufw::is_active(runner) {
        BackendKind::Ufw
    } else if cfa_csf::is_installed(&config.csf.dir) {
        BackendKind::Csf
    } else if cfa_iptables::input_has_rules(runner) {
        BackendKind::Iptables
    } else {
        BackendKind::Nftables
    }
}
