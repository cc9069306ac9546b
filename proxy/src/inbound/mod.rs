//! Inbound: being built.
