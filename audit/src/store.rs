//! See the crate documentation; built by the egress and audit issue.
