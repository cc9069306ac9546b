//! Kubernetes support for Palisade: platform teams manage the mesh with
//! `kubectl apply` and read back what the controller did.
//!
//! - [`resources`]: the CustomResources of group `palisade.dev` (`CedarPolicy`,
//!   `EgressAllowlist`, `MeshConfig`, `CertificateRevocation`) and their status.
//! - [`manifests`]: the CRD manifests generated from those types.
//! - [`webhook`]: the validating admission webhook that refuses an invalid
//!   `CedarPolicy` at `kubectl apply`, with the CLI's message.
//!
//! Without Kubernetes everything works from a bundle directory; the controller
//! turns cluster state into the same bundle files and runs them through the same
//! loader, so a policy means the same thing whichever source it came from.

pub mod manifests;
pub mod resources;
pub mod webhook;
