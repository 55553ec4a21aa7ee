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
                    "backend: auto found no firewall tool: no running firewalld, no active ufw, no \
                     csf ({}), no rules in iptables' INPUT chain, and no `nft` on PATH or in /usr/sbin, /sbin; install \
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
                driver: config.ufw.driver,
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
        BackendKind::Firewalld => Box::new(cfa_firewalld::FirewalldBackend::new(
            cfa_firewalld::FirewalldOptions {
                name: config.firewalld.name.clone(),
                ..cfa_firewalld::FirewalldOptions::default()
            },
            spec,
            runner,
        )?),
        BackendKind::Auto => unreachable!("auto is resolved above"),
    })
}

/// Checks what the configuration hands each backend, as the backend's own tool would read it, so
/// that `check-config` (exit 78) refuses a name that would reach a tool wrongly: nftables family,
/// table and chain, the iptables chain, the firewalld name. Every backend's options are checked,
/// whichever is chosen:
/// `-b` and `auto` may pick any of them.
pub fn check_options(config: &Config) -> Result<(), String> {
    cfa_nftables::validate_options(&nft_options(config))?;
    cfa_iptables::validate_chain_name(&config.iptables.chain)
        .map_err(|e| format!("iptables.chain: {e}"))?;
    cfa_firewalld::validate_name(&config.firewalld.name)
        .map_err(|e| format!("firewalld.name: {e}"))?;
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

/// `auto`: a running firewalld, else active ufw, else an installed csf, else rules present in
/// iptables' filter INPUT, else nftables.
///
/// firewalld comes first: its table rejects whatever its zones do not allow, and a reject in any
/// nftables base chain is final, so no other backend's accept helps under it (and ufw and csf do
/// not run beside it). One that is installed but not running is reported and passed over, never
/// started (`firewall-cmd --state` only asks the bus).
pub fn detect(config: &Config, runner: &Runner) -> BackendKind {
    match cfa_firewalld::status(runner) {
        // A FAILED firewalld is still this host's firewall: its backend reports the failure.
        cfa_firewalld::Status::Running | cfa_firewalld::Status::Failed => {
            return BackendKind::Firewalld
        }
        cfa_firewalld::Status::NotRunning(why) => tracing::warn!(
            "firewalld is installed but not running ({why}); cf-allowlist never starts it and \
             looks for another firewall"
        ),
        cfa_firewalld::Status::NotInstalled => {}
    }
    let ufw = cfa_ufw::UfwOptions {
        dir: config.ufw.dir.clone(),
        ..cfa_ufw::UfwOptions::default()
    };
    if cfa_ufw::is_active_in(runner, &ufw) {
        BackendKind::Ufw
    } else if cfa_csf::is_installed(&config.csf.dir) {
        BackendKind::Csf
    } else if cfa_iptables::input_has_rules(runner) {
        BackendKind::Iptables
    } else {
        BackendKind::Nftables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firewalld_name_firewalld_cannot_take_is_a_configuration_error() {
        let ok = Config::parse("firewalld: { name: web-cf_1 }\n", "x").unwrap();
        assert_eq!(check_options(&ok), Ok(()));
        for bad in [
            "\"\"",
            "a-name-far-too-long",
            "1st",
            "\"web cf\"",
            "\"Äpfel\"",
        ] {
            let config = Config::parse(&format!("firewalld: {{ name: {bad} }}\n"), "x").unwrap();
            let e = check_options(&config).unwrap_err();
            assert!(e.starts_with("firewalld.name: "), "{bad}: {e}");
        }
    }
}
