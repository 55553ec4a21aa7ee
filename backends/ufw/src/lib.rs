//! The ufw backend.
