//! A loopback HTTP server for fetch tests (to be written).
