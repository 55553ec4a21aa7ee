//! cf-allowlist: keep an origin server's firewall allowlist equal to Cloudflare's published IP
//! ranges.
//!
//! Data flows one way: [`sources`] -> desired list -> backend reads live state -> [`cfa_core::Plan`]
//! -> guards -> backend applies -> backend reads back ([`app`]).

pub mod app;
pub mod backends;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod lock;
pub mod sources;
pub mod state;
