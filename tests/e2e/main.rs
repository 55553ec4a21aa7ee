//! End to end: the built `cf-allowlist` binary against real firewalls, each test in a network
//! namespace of its own with a loopback HTTP server inside it serving Cloudflare-shaped answers.

mod audit;
mod backends;
mod cli;
mod config_faults;
mod faults;
mod firewalld;
mod host_faults;
mod nftables;
mod outputs;
mod util;
