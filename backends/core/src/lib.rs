//! The contract between the cf-allowlist engine and the firewalls it drives.
//!
//! - [`cidr`]: the strict CIDR parser every entry goes through, and the special-purpose ranges.
//! - [`model`]: what the engine wants ([`AllowList`], [`RuleSpec`]), what a backend finds
//!   ([`Live`]) and the difference between the two ([`Plan`]).
//! - [`backend`]: the [`Backend`] trait every firewall implements.
//! - [`process`]: the one place that runs external tools (argument vectors, never a shell).
//! - [`files`]: atomic file replacement for backends and state that live in files.

pub mod backend;
pub mod cidr;
pub mod files;
pub mod model;
pub mod process;
pub mod snapshot;

pub use backend::{Backend, BackendError};
pub use cidr::{parse_cidr, CidrError};
pub use model::{AllowList, Family, Live, Plan, Protocol, RuleSpec, Structure};
pub use process::{CommandError, Runner};

/// The comment that tags every rule this tool owns, where a firewall stores rule comments.
/// Part of the compatibility contract: renaming it orphans rules written by older versions.
pub const RULE_COMMENT: &str = "cf-allowlist";
