//! The csf backend.
