//! Attestation: how the CA decides which identity a caller may have.
//!
//! Today: single-use join tokens (local machines and VMs) for the first SVID, and
//! the caller's current SVID for renewals. Kubernetes ServiceAccount tokens come
//! with the Kubernetes issue.

pub mod join_token;
