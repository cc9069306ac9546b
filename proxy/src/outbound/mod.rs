//! Outbound: being built.
