//! Choosing and building the backend: the only place that knows every backend crate.

use cfa_core::{Backend, BackendError, Runner};

use crate::config::{BackendKind, Config};

/// Builds the backend `kind` (resolving `auto`) for `config`.
pub fn build(config: &Config, kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    let runner = Runner::new();
    let spec = config.rule_spec();
    let kind = match kind {
        BackendKind::Auto => {
            let k = detect(config, &runner);
            if k == BackendKind::Nftables && !runner.has("nft") {
                return Err(BackendError::Conflict(format!(
                    "backend: auto found no firewall tool: no active ufw, no csf ({}), no rules in \
                     iptables' INPUT chain, and no `nft` on PATH or in /usr/sbin, /sbin; install \
                     nftables (`apt-get install nftables`, `dnf install nftables`) or the \
                     firewall this host uses, or name it with `backend:`",
                    config.csf.dir.join("csf.conf").display()
                )));
            }
            tracing::info!(backend = %k, "backend: auto chose {k}");
            k
        }
        k => k,
    };
    Ok(match kind {
        BackendKind::Nftables => Box::new(cfa_nftables::NftablesBackend::new(
            nft_options(config),
            spec,
            runner,
        )?),
        BackendKind::Iptables => Box::new(cfa_iptables::IptablesBackend::new(
            cfa_iptables::IptablesOptions {
                chain: config.iptables.chain.clone(),
                ipset: config.iptables.ipset,
                variant: config.iptables.variant,
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
                recover: config.csf.recover.clone(),
            },
            spec,
            runner,
        )),
        BackendKind::Auto => unreachable!("auto is resolved above"),
    })
}

/// Checks what the configuration hands each backend, as the backend's own tool would read it, so
/// that `check-config` (exit 78) refuses a name that would reach a tool wrongly: nftables family,
/// table and chain, the iptables chain. Every backend's options are checked, whichever is chosen:
/// `-b` and `auto` may pick any of them.
pub fn check_options(config: &Config) -> Result<(), String> {
    cfa_nftables::validate_options(&nft_options(config))?;
    cfa_iptables::validate_chain_name(&config.iptables.chain)
        .map_err(|e| format!("iptables.chain: {e}"))?;
    let spec = config.rule_spec();
    let holds = match config.nftables.family.as_str() {
        "ip" => vec![cfa_core::Family::V4],
        "ip6" => vec![cfa_core::Family::V6],
        _ => cfa_core::Family::ALL.to_vec(),
    };
    if !spec.families.iter().any(|f| holds.contains(f)) {
        return Err(format!(
            "nftables.family: an {} table holds none of the managed families ({}); use an inet table, or change families",
            config.nftables.family,
            spec.families.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

fn nft_options(config: &Config) -> cfa_nftables::NftOptions {
    cfa_nftables::NftOptions {
        family: config.nftables.family.clone(),
        table: config.nftables.table.clone(),
        chain: config.nftables.chain.clone(),
    }
}

/// `auto`: active ufw, else an installed csf, else rules present in iptables' filter INPUT,
/// else nftables.
pub fn detect(config: &Config, runner: &Runner) -> BackendKind {
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
