//! The interface between the engine and a firewall.

use std::path::PathBuf;

use crate::model::{Family, Live, Plan};
use crate::process::CommandError;

/// A firewall the engine can read and change.
///
/// The engine calls [`Backend::read`], computes a [`Plan`] (and refuses it if a guard says so), then
/// [`Backend::check`] for a dry run or [`Backend::apply`] for a real one, and finally `read` again
/// to verify. A backend touches only the objects it owns and knows nothing of HTTP, YAML or the CLI.
pub trait Backend {
    /// The backend's name as the configuration spells it (`nftables`, `iptables`, ...).
    fn name(&self) -> &'static str;

    /// The families this backend can hold right now, of those the rule spec asks for: an nftables
    /// `ip` table holds no IPv6, ufw with `IPV6=no` none. The engine plans only these (the backend
    /// says why in `Live::warnings`). By default, every family.
    fn families(&self) -> Result<Vec<Family>, BackendError> {
        Ok(Family::ALL.to_vec())
    }

    /// Reads the objects this backend owns from the live firewall. Read-only.
    fn read(&self) -> Result<Live, BackendError>;

    /// Validates that `plan` would apply, without changing anything (`nft -c`,
    /// `iptables-restore --test`, ...). Backends with no such check only validate their input.
    fn check(&self, plan: &Plan) -> Result<(), BackendError>;

    /// Applies `plan` atomically where the firewall allows it; where it does not, undoes the
    /// applied steps on failure. On `Err` the firewall is as it was before the call.
    fn apply(&self, plan: &Plan) -> Result<(), BackendError>;

    /// Removes every object this backend owns, and nothing else. Idempotent.
    fn purge(&self) -> Result<(), BackendError>;
}

/// Why a backend operation failed. Every variant names the operation and keeps the cause.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// An external tool failed; the error carries its stderr.
    #[error("{action}: {source}")]
    Command {
        /// What the backend was doing ("applying the nftables transaction").
        action: String,
        /// The tool's failure.
        #[source]
        source: CommandError,
    },
    /// The tool's output could not be understood.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed ("nft -j list table inet cf_allowlist").
        what: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The live firewall is in a state the backend refuses to guess about (a half-present marker,
    /// an object of ours that is not what we would have written, a disabled feature).
    #[error("{0}")]
    Conflict(String),
    /// A request sent to the kernel over netlink failed: the socket, or the kernel refused it
    /// (the source says which message and why).
    #[error("{action}: {source}")]
    Kernel {
        /// What the backend was doing ("applying the element changes to inet cf_allowlist").
        action: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// After apply, the live state differs from the plan.
    #[error("verification failed after apply: {0}")]
    Verify(String),
    /// A change failed and undoing what it had already done failed too: both causes are kept,
    /// and the firewall may be half-changed (the message says so).
    #[error("{cause}; undoing the change ALSO FAILED ({undo}): the firewall may be half-changed, check it now")]
    UndoFailed {
        /// Why the change failed.
        cause: Box<BackendError>,
        /// Why undoing it failed.
        undo: Box<BackendError>,
    },
}

impl BackendError {
    /// Wraps a tool failure with what was being done.
    pub fn command(action: impl Into<String>, source: CommandError) -> Self {
        BackendError::Command {
            action: action.into(),
            source,
        }
    }

    /// A change that failed (`cause`) and whose undo failed too (`undo`).
    pub fn undo_failed(cause: BackendError, undo: BackendError) -> Self {
        BackendError::UndoFailed {
            cause: Box::new(cause),
            undo: Box::new(undo),
        }
    }

    /// Wraps a netlink failure with what was being done.
    pub fn kernel(
        action: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError::Kernel {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O failure with the file.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackendError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
