//! The nftables backend.
