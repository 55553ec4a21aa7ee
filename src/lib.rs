//! cf-allowlist: keep an origin server's firewall allowlist equal to Cloudflare's published IP
//! ranges.
//!
//! Data flows one way: [`sources`] -> desired list -> backend reads live state -> [`plan`] (the
//! target, the [`cfa_core::Plan`] and the guards, pure) -> backend applies -> backend reads back
//! ([`app`]) -> the same list to the [`outputs`] (web servers, Fail2Ban) -> [`report`].

pub mod app;
pub mod audit;
pub mod backends;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod listen;
pub mod lock;
pub mod outputs;
pub mod plan;
pub mod report;
pub mod sources;
pub mod state;
