//! Kubernetes support for Palisade: platform teams manage the mesh with
//! `kubectl apply` and read back what the controller did.
//!
//! - [`resources`]: the CustomResources of group `palisade.dev` (`CedarPolicy`,
//!   `EgressAllowlist`, `MeshConfig`, `CertificateRevocation`) and their status.
//! - [`manifests`]: the CRD manifests generated from those types.
//! - [`source`]: cluster state → bundle files, the controller's pure core: the
//!   same loader as a bundle directory, a verdict per resource.
//! - [`export`]: a bundle → the equivalent Kubernetes objects (`palisade policy
//!   export --format crds`), the inverse of [`source`].
//! - [`labels`]: the labels and annotations Palisade reads on Kubernetes objects.
//! - [`tokenreview`]: the CA's TokenReview client, for ServiceAccount attestation.
//! - [`webhook`]: the validating admission webhook that refuses an invalid
//!   `CedarPolicy` at `kubectl apply`, with the CLI's message.
//! - [`controller`]: watches the cluster, builds the policy bundle from it through
//!   the same loader as files, publishes it, applies `CertificateRevocation`s at
//!   the CA and writes each resource's status back (one leader at a time).
//! - `fake` (feature `fake-api`, tests only): a small in-process Kubernetes API
//!   server that kube's real client talks to.
//!
//! Without Kubernetes everything works from a bundle directory; the controller
//! turns cluster state into the same bundle files and runs them through the same
//! loader, so a policy means the same thing whichever source it came from.

pub mod controller;
pub mod export;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod labels;
pub mod manifests;
pub mod resources;
pub mod source;
pub mod tokenreview;
pub mod webhook;
