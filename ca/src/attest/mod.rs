//! Attestation: how the CA decides which identity a caller may have.
//!
//! The first SVID is bootstrapped by one of two credentials: a single-use join
//! token ([`join_token`], local machines and VMs) or a Kubernetes ServiceAccount
//! token reviewed by the API server ([`service_account`], pods). A renewal is
//! authenticated by the caller's current SVID (see `service`).

pub mod join_token;
pub mod service_account;
